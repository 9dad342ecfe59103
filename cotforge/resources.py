"""Where the data files that ship with cotforge live: check presets (`filters`), card templates (`data_cards`).

In a source checkout (plain or editable install) they are the repository's top-level folders, the
ones users read and edit; a wheel carries them inside the package (see setup.py).
"""

from __future__ import annotations

from pathlib import Path

from cotforge.errors import CotforgeError

PACKAGE = Path(__file__).resolve().parent


def shipped_folder(name: str) -> Path:
    """The folder `name` (`filters` or `data_cards`) of this installation."""
    inside = PACKAGE / name
    if inside.is_dir():
        return inside
    checkout = PACKAGE.parent
    if (checkout / name).is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / name
    raise CotforgeError(f"cotforge's {name}/ folder is missing from this installation (looked in {inside} "
                        f"and {checkout / name}); reinstall cotforge")
