"""The one exception type a user can cause.

Anything raised as :class:`UserError` is caught at the edge (the CLI) and printed as one line, with exit
code 2: bad config files, unknown profiles, missing binaries, unreachable schedulers, corrupt inputs.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, reported in one line naming what is at fault."""
