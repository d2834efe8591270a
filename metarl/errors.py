"""The one base class of errors the user can fix (bad config, missing data, corrupt checkpoint, unreachable Ray).

``metarl`` commands turn a :class:`UserError` into one line on stderr and exit status 2; anything else is a bug and
keeps its traceback. The class lives in this import-free module so the command line can catch it without loading
torch, Ray or the data loaders, and without importing anything at the moment an exception is already propagating.
"""

from __future__ import annotations


class UserError(Exception):
    """A request that cannot be carried out as given; the message says what to change."""
