"""What pyproject.toml cannot say: the presets and card templates ship inside the package.

`filters/` (check presets) and `data_cards/` (card templates) stay top-level folders of the source
tree, where users read and edit them; a wheel carries them as `cotforge/filters` and
`cotforge/data_cards`. cotforge finds either (see cotforge/resources.py).
"""

from setuptools import find_packages, setup

SHIPPED = {"cotforge.filters": "filters", "cotforge.data_cards": "data_cards"}

setup(
    packages=find_packages(include=["cotforge*"]) + list(SHIPPED),
    package_dir=SHIPPED,
    package_data={"cotforge.filters": ["*.yaml"], "cotforge.data_cards": ["*.md"],
                  "cotforge.view": ["templates/*.html", "static/*"]},
)
