"""Vetting a ``torch.save`` zip before torch opens it for an untrusted checkpoint.

``torch.load`` hands any zip holding ``constants.pkl`` to ``torch.jit.load``, which runs the
archive's TorchScript (``__setstate__``) without consulting the ``pickle_module``; a file
that does not start with the zip magic goes to torch's legacy loaders. So before anything is
unpickled, the records are listed with torch's own zip reader (what ``torch.load`` will see)
and with Python's ``zipfile`` (compression, sizes), and the file is refused unless it is
exactly what ``torch.save`` writes: ``data.pkl``, tensor blobs under ``data/``, a few
version files, all stored uncompressed. Every record's CRC-32 is checked before use, trusted
or not (``check_zip_crc``).
"""

from __future__ import annotations

import re
import zipfile

from parapolicy.checkpoints.messages import one_line, quoted
from parapolicy.errors import CheckpointError, UntrustedCheckpointError

ZIP_MAGIC = b"PK\x03\x04"
_PLAIN_RECORDS = re.compile(r"data\.pkl|byteorder|version|\.format_version|\.storage_alignment"
                            r"|\.data/version|\.data/serialization_id|data/[0-9]+")
_TRUST_HINT = "pass trust_checkpoint=True only if you trust this file"
_DOS_DIRECTORY, _ENCRYPTED = 0x10, 0x1  # external attribute and flag bits torch's zip reader obeys


def check_plain_torch_zip(file, size: int, origin: str) -> None:
    """Raise ``UntrustedCheckpointError`` unless ``file`` (seekable, binary) is a plain torch.save zip."""
    import torch

    file.seek(0)
    if file.read(4) != ZIP_MAGIC:
        raise UntrustedCheckpointError(
            f"{origin!r} does not start with a zip header: not a torch.save zip (legacy torch formats are "
            f"only read when trusted); {_TRUST_HINT}"
        )
    file.seek(0)
    try:
        records = set(torch._C.PyTorchFileReader(file).get_all_records())
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
    except Exception as exc:  # miniz / zipfile reject a damaged directory
        raise UntrustedCheckpointError(f"{origin!r} is not a readable zip archive: {one_line(exc)}") from None
    finally:
        file.seek(0)
    foreign = sorted(r for r in records if not _PLAIN_RECORDS.fullmatch(r))
    if foreign:
        kind = "a TorchScript archive" if "constants.pkl" in records or any(r.startswith("code/") for r in foreign) \
            else "not a plain torch.save archive"
        raise UntrustedCheckpointError(
            f"{origin!r} is {kind}: expected only data.pkl, data/<n> and version records, found "
            f"{quoted(foreign, 4)}; refusing to load it ({_TRUST_HINT})"
        )
    if "data.pkl" not in records:
        raise UntrustedCheckpointError(f"{origin!r} is a zip without data.pkl: not a torch.save checkpoint")
    names = {info.filename.split("/", 1)[-1] for info in infos}
    prefixes = {info.filename.split("/", 1)[0] for info in infos}
    if names != records or len(prefixes) != 1 or len(infos) != len(records):
        raise UntrustedCheckpointError(
            f"{origin!r}: the zip directory lists {len(infos)} entries that torch's reader sees as {len(records)} "
            "records; expected one folder as torch.save writes it"
        )
    packed = [info.filename for info in infos if info.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise UntrustedCheckpointError(
            f"{origin!r}: compressed zip entries {quoted(packed, 4)}; torch.save stores entries uncompressed"
        )
    total = sum(info.file_size for info in infos)
    if total > size:
        raise UntrustedCheckpointError(f"{origin!r}: zip entries claim {total} bytes but the file has {size}")


def check_zip_crc(file, origin: str) -> None:
    """Raise ``CheckpointError`` unless every record of the zip ``file`` matches its CRC-32.

    torch's reader never checks them, so a damaged tensor or pickle would otherwise load as
    silently different weights or settings. Records are read in blocks, the whole file once.
    """
    file.seek(0)
    name = None
    try:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                name = info.filename
                if info.is_dir() or info.external_attr & _DOS_DIRECTORY or info.flag_bits & _ENCRYPTED:
                    raise zipfile.BadZipFile("a directory or encrypted entry (torch would read it as zeros)")
                with archive.open(info) as record:
                    while record.read(1 << 20):
                        pass
    except Exception as exc:  # noqa: BLE001 - BadZipFile (bad CRC-32, header mismatch), EOFError, zlib errors ...
        where = f"zip record {name!r}" if name is not None else "the zip directory"
        raise CheckpointError(f"{origin!r} is damaged: {where} does not match what the archive records "
                              f"({one_line(exc)})") from None
    finally:
        file.seek(0)

