"""What crosses ranks, and only that: tensors, and JSON text carried as bytes in a uint8 tensor.

torch.distributed's `*_object` collectives (all_gather_object, broadcast_object_list, ...) send
pickles, and unpickling runs whatever its writer put in it: whoever joins a check's process group
as a rank (torch.distributed authenticates nobody) would run code as you. So nothing here ever
unpickles: a rank gathers the lengths of the others' JSON documents, then their bytes padded to
the longest, and parses them with json.loads. A peer can send wrong numbers, never code.

Before anything else crosses, every rank proves it knows this check's key, which only the private
rendezvous file holds (never the store, which any peer that connects can list): a process that
joined in a rank's place cannot, and the check refuses to go on (prove).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from autograd_check.base.errors import EnvironmentProblem
from autograd_check.base.lazy_torch import import_torch

if TYPE_CHECKING:
    import torch
    from torch import Tensor

PROOF_BYTES = 32
"""An HMAC-SHA256 tag: what each rank sends to show it read the private rendezvous file."""
MAX_JSON_BYTES = 64 * 1024 * 1024
"""The longest JSON document a rank accepts from another (a result with its tensors is far less)."""


def proof(key: str, rank: int) -> bytes:
    """This rank's tag for this check: only a reader of the rendezvous file can compute it."""
    return hmac.new(key.encode(), f"autograd-check rank {rank}".encode(), hashlib.sha256).digest()


def prove(key: str, rank: int, world: int, device: torch.device) -> None:
    """Every rank sends its tag and checks everyone's: a rank whose tag is wrong joined without
    the private rendezvous file (another user's process that found the store's port), and the
    check stops before any data of the check crosses (EnvironmentProblem, exit 3)."""
    import torch.distributed as dist  # torch: ranks only

    torch = import_torch()
    mine = torch.frombuffer(bytearray(proof(key, rank)), dtype=torch.uint8).to(device)
    tags = [torch.empty(PROOF_BYTES, dtype=torch.uint8, device=device) for _ in range(world)]
    dist.all_gather(tags, mine)
    strangers = [r for r, tag in enumerate(tags)
                 if not hmac.compare_digest(bytes(tag.cpu().tolist()), proof(key, r))]
    if strangers:
        who = ", ".join(map(str, strangers))
        raise EnvironmentProblem(
            f"rank {rank}: refusing to go on: rank{'s' * (len(strangers) > 1)} {who} of {world} "
            "joined without this check's private rendezvous file (another process found the "
            "store's port and took a rank's place); nothing of the check was exchanged")


def _to_tensor(data: bytes, device: torch.device) -> Tensor:
    torch = import_torch()
    tensor: Tensor = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
                            if data else torch.zeros(0, dtype=torch.uint8, device=device))
    return tensor


def _parse(tensor: Tensor, length: int, sender: int) -> Any:
    data = bytes(tensor[:length].cpu().tolist())
    try:
        return json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise EnvironmentProblem(f"rank {sender} sent a document that is not JSON ({e})") from None


def _length(value: int, sender: int) -> int:
    if not 0 <= value <= MAX_JSON_BYTES:
        raise EnvironmentProblem(f"rank {sender} announced a document of {value} bytes")
    return value


def all_gather_json(value: Any, world: int, device: torch.device) -> list[Any]:
    """Every rank's `value` (plain JSON data), on every rank, in rank order."""
    import torch.distributed as dist  # torch: ranks only

    torch = import_torch()
    data = json.dumps(value, sort_keys=True).encode()
    mine = torch.tensor([len(data)], dtype=torch.int64, device=device)
    lengths = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(lengths, mine)
    sizes = [_length(int(n.item()), r) for r, n in enumerate(lengths)]
    longest = max(sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:len(data)] = _to_tensor(data, device)
    pieces = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in range(world)]
    dist.all_gather(pieces, padded)
    return [_parse(piece, size, r) for r, (piece, size) in enumerate(zip(pieces, sizes,
                                                                          strict=True))]


def broadcast_json(value: Any, src: int, rank: int, device: torch.device) -> Any:
    """`value` of rank `src` (plain JSON data), on every rank; the others pass None."""
    import torch.distributed as dist  # torch: ranks only

    torch = import_torch()
    data = json.dumps(value, sort_keys=True).encode() if rank == src else b""
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(length, src=src)
    size = _length(int(length.item()), src)
    payload = (_to_tensor(data, device) if rank == src
               else torch.zeros(size, dtype=torch.uint8, device=device))
    dist.broadcast(payload, src=src)
    return value if rank == src else _parse(payload, size, src)
