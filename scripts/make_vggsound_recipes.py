"""Write data_manifests/vggsound_test_recipes.csv.gz from VGGSound's official test list.

    python scripts/make_vggsound_recipes.py path/to/vggsound/test.csv

tests/test_testsets.py checks that the shipped file is what this gives for the list it carries.
"""

import sys

from cinefoley.testsets import VGGSOUND_RECIPES, write_recipes
from cinefoley.worlds.vggsound.testsets import vggsound_recipes

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(write_recipes(vggsound_recipes(sys.argv[1]), VGGSOUND_RECIPES))
