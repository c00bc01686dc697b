"""A video player widget that tells the kernel when the participant has really listened.

``ipywidgets.Video`` cannot say whether a clip was played, so the study uses a small anywidget
(https://anywidget.dev, PyPI ``anywidget``): the mp4 arrives as bytes in ``value`` (a ``blob:`` URL
in the page, so no file name or server path reaches the browser) and the page sets ``heard`` once
the time actually played (``video.played``, seeking does not count) covers ``min_fraction`` of the clip.
"""

from __future__ import annotations

import anywidget
import traitlets

_ESM = """
function render({ model, el }) {
  const label = model.get("label");
  const title = document.createElement("div");
  title.className = "cf-title";
  title.textContent = label;
  const video = document.createElement("video");
  video.controls = true;
  video.preload = "auto";
  video.playsInline = true;
  video.disablePictureInPicture = true;
  video.setAttribute("controlslist", "nodownload noremoteplayback");
  video.setAttribute("aria-label", "Clip " + label);
  const play = document.createElement("button");
  play.className = "cf-play";
  play.textContent = "Play " + label;
  const status = document.createElement("div");
  status.className = "cf-status";
  let url = null;

  function playedSeconds() {
    let total = 0;
    for (let i = 0; i < video.played.length; i++) total += video.played.end(i) - video.played.start(i);
    return total;
  }
  function showStatus() {
    if (model.get("heard")) { status.textContent = label + ": played"; return; }
    const share = video.duration ? Math.min(1, playedSeconds() / video.duration) : 0;
    status.textContent = share > 0 ? label + ": " + Math.round(100 * share) + " % played" : label + ": not played yet";
  }
  function check() {
    if (!model.get("heard") && video.duration &&
        playedSeconds() >= model.get("min_fraction") * video.duration - 0.05) {
      model.set("heard", true);
      model.save_changes();
    }
    showStatus();
  }
  function load() {
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(new Blob([model.get("value")], { type: "video/mp4" }));
    video.src = url;
    showStatus();
  }
  video.addEventListener("timeupdate", check);
  video.addEventListener("ended", check);
  play.addEventListener("click", () => { video.currentTime = 0; video.play(); });
  model.on("change:value", load);
  model.on("change:heard", showStatus);
  load();
  el.classList.add("cf-player");
  el.append(title, video, play, status);
  return () => { if (url) URL.revokeObjectURL(url); };
}
export default { render };
"""

_CSS = """
.cf-player { display: flex; flex-direction: column; align-items: center; gap: 6px; margin: 0 12px; }
.cf-player .cf-title { font-size: 1.6em; font-weight: bold; }
.cf-player video { width: 320px; max-width: 42vw; background: #000; }
.cf-player .cf-play { font-size: 1.1em; padding: 4px 16px; }
.cf-player .cf-status { color: #555; }
"""


class ClipPlayer(anywidget.AnyWidget):
    """One side (A or B) of a trial: an mp4 given as bytes, and whether it has been heard."""

    _esm = _ESM
    _css = _CSS
    value = traitlets.Bytes(b"").tag(sync=True)
    label = traitlets.Unicode("A").tag(sync=True)
    min_fraction = traitlets.Float(0.9).tag(sync=True)
    heard = traitlets.Bool(False).tag(sync=True)
