"""The one base class of every expected failure: the CLI prints its message and exits 1.

Each module's own error (ConfigError, DownloadError, ...) derives from UserError as well as
from the built-in class it refines, so the CLI catches them all without importing the modules
that raise them (a stage then depends only on the modules its command really runs).
"""


class UserError(Exception):
    """A failure the user can fix; its message names the culprit and the fix, in one line."""
