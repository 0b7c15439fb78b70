"""What the ranks' fork server imports first (launch.preload): torch through import_torch, so that
torch's warnings about numpy, and numpy 2's notice beside a torch built for numpy 1, stay off the
user's screen there too (the fork server writes to the command's stderr)."""

from __future__ import annotations

from autograd_check.base.lazy_torch import import_torch

import_torch()  # at import on purpose: the fork server loads this module by name
