"""Write the test-set recipes of data_manifests/: CineToy's, and VGGSound's from its official test list.

    python scripts/make_recipes.py path/to/vggsound/test.csv

tests/test_testsets.py checks that the shipped files are what this gives.
"""

import sys

from cinefoley.testsets import CINETOY_RECIPES, VGGSOUND_RECIPES, write_recipes
from cinefoley.worlds.cinetoy.world import cinetoy_recipes
from cinefoley.worlds.vggsound.testsets import vggsound_recipes

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(write_recipes(cinetoy_recipes(), CINETOY_RECIPES))
    print(write_recipes(vggsound_recipes(sys.argv[1]), VGGSOUND_RECIPES))
