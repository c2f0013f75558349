"""A program job's output folder: made for each job (``<output_dir>/<transaction
id>``), and the files the program left in it recorded as the job's outputs,
each with a media type guessed from its name."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
from pathlib import Path

from ..engine.job import Job
from ..errors import JobFailed

__all__ = ["make_output_dir", "record_outputs", "media_type"]


def make_output_dir(folder: Path, transaction_id: str, *, first_run: bool) -> None:
    """Make the job's output folder.  On its first run the folder must be new or
    empty: files in it were left by an earlier job with the same transaction ID
    (the memory store numbers jobs from T0000001 at every start, as does a new
    database), and would be listed as this job's outputs.  A run again keeps
    what the runs before it left.

    Raises:
        JobFailed: the folder cannot be made, or holds another job's files.
    """
    taken = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if first_run:
            with os.scandir(folder) as entries:
                taken = next(entries, None) is not None
    except OSError as exc:
        raise JobFailed(f"cannot make the output folder {folder}: "
                        f"{exc.strerror or exc}") from None
    if taken:
        raise JobFailed(f"the output folder {folder} already holds files, left by an "
                        f"earlier job numbered {transaction_id}; move them away, or give "
                        f"this project another output_dir")



async def record_outputs(job: Job, folder: Path) -> None:
    """Record every file the program left in its output folder, sorted by path,
    but those recorded already: a job run again (``retries``, ``retry_on_restart``)
    has the same folder, and each run recorded what was there then.

    The folder is read in a worker thread: a program that leaves 100 000 files
    would otherwise hold the event loop for about two seconds.
    """
    recorded = {output.name for output in job.record.outputs}
    for name, uri, media in await asyncio.to_thread(_outputs_in, folder):
        if name not in recorded:
            job.add_output(name, uri, media)


def _outputs_in(folder: Path) -> list[tuple[str, str, str | None]]:
    """(name relative to ``folder``, file URI, media type) of each regular file
    under ``folder``, sorted by path; links to folders are not followed."""
    names: list[str] = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        with contextlib.suppress(OSError), os.scandir(folder / prefix) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(f"{prefix}{entry.name}/")
                elif entry.is_file():
                    names.append(prefix + entry.name)
    names.sort(key=lambda name: name.split("/"))
    return [(name, (folder / name).as_uri(), media_type(name)) for name in names]


#: What a compressed file is, whatever it holds (``mimetypes`` names what it holds).
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
               "xz": "application/x-xz", "br": "application/x-brotli",
               "compress": "application/x-compress"}


def media_type(name: str) -> str | None:
    """A file's media type from its name: ``archive.tar.gz`` is ``application/gzip``
    (``mimetypes`` says ``application/x-tar``, what the gzip file holds)."""
    guessed, encoding = mimetypes.guess_type(name)
    if encoding is not None:
        return _COMPRESSED.get(encoding, "application/octet-stream")
    return guessed
