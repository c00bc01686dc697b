"""The shared cells of the seven notebooks: the ``parameters`` cell and the cell that opens the world.

``python scripts/notebook_cells.py`` rewrites those two cells in every ``notebooks/NN_*.ipynb`` so they
stay identical (a test checks they are); the notebooks' other cells are edited in Jupyter as usual.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

PARAMETERS = '''profile = "demo"          # smoke (CI, minutes), demo (the default CineToy run) or paper
out_dir = "../runs/demo"  # everything the run writes; the seven notebooks share it
seed = 0
world = "cinetoy"         # "cinetoy" (built in) or "vggsound" (the real tier: the paths below)
# the real tier only; None = as given to an earlier notebook for this out_dir
vggsound_csv = None       # the official vggsound.csv, or a split list such as test.csv
video_dir = None          # the folder holding your VGGSound videos
cavp_ckpt = None          # cavp_epoch66.ckpt: the teacher T
ldm_ckpt = None           # ldm_epoch240.ckpt: the generator G
classifier_ckpt = None    # eval_classifier.ckpt: the Align Acc referee
panns_ckpt = None         # PANNs Cnn14_16k_mAP*.pth: the FD / KID / KL / IS referee
vggish_ckpt = None        # vggish-10086976.pth: the FAD referee
model_options = None      # loader keywords per checkpoint, only for other architectures than the released
num_workers = None        # processes decoding videos (default 4)
frames_dir = None         # a folder for the 4-fps frame store (made by notebook 01, read instead of the videos)'''

#: extra parameters of single notebooks, appended to the shared cell
EXTRA = {"02": 'retrain = False           # CineToy: train the models from the seeds instead of loading the shipped ones',
         "04": 'own_video = None          # a video file of yours for "try it on your own video"; None: a test clip',
         "07": 'pairs_csv = None          # your own pairs CSV (clip_id, baseline, ours); None: notebook 04\'s sound\n'
               'own_clips = None          # a folder of your clips for "from your clips to a study"; None: 2 test clips'}

OPEN_WORLD = '''from cinefoley.worlds import open_world

w = open_world(world, out_dir, profile=profile, seed=seed, vggsound_csv=vggsound_csv, video_dir=video_dir,
               cavp_ckpt=cavp_ckpt, ldm_ckpt=ldm_ckpt, classifier_ckpt=classifier_ckpt, panns_ckpt=panns_ckpt,
               vggish_ckpt=vggish_ckpt, model_options=model_options, num_workers=num_workers,
               frames_dir=frames_dir)
w'''


def parameters_source(name: str) -> str:
    extra = EXTRA.get(name[:2])
    return PARAMETERS + ("\n" + extra if extra else "")


def sync(path: Path) -> bool:
    """Rewrite the parameters cell and the cell after it; True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    (i,) = [k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    before = (nb.cells[i].source, nb.cells[i + 1].source)
    nb.cells[i].source = parameters_source(path.name)
    nb.cells[i + 1].source = OPEN_WORLD
    if before == (nb.cells[i].source, nb.cells[i + 1].source):
        return False
    nbformat.write(nb, path)
    return True


if __name__ == "__main__":
    changed = [p.name for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if sync(p)]
    print("updated:", ", ".join(changed) or "nothing")
    sys.exit(0)
