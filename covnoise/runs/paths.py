"""Where the run store lives when no path is given: $COVNOISE_STORE, else the user's data folder.

The data folder is the platform's usual place, as platformdirs knows it: on Linux
``$XDG_DATA_HOME/covnoise``, by default ``~/.local/share/covnoise``; on macOS
``~/Library/Application Support/covnoise``; on Windows ``%LOCALAPPDATA%\\covnoise``.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

STORE_ENV = "COVNOISE_STORE"
APP_NAME = "covnoise"
STORE_FILE = "runs.sqlite"


def user_data_dir() -> Path:
    """Per-user data folder for covnoise (XDG on Linux, the platform's usual place elsewhere)."""
    # appauthor=False: %LOCALAPPDATA%\covnoise on Windows, without a vendor folder above it
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def default_store_path() -> Path:
    """The store file: $COVNOISE_STORE, else ``runs.sqlite`` in the user's data folder."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    return user_data_dir() / STORE_FILE
