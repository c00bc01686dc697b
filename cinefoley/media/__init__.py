"""Media I/O shared by both worlds: frames at 4 fps (``video``), Diff-Foley's mel front end
(``audio``), Griffin-Lim (``vocoder``) and manifests of clips read into tensors (``clips``)."""
