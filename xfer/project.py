"""`xfer init [DIR]`: a starting project folder for a pip-installed xfer, since the package
itself is never written to: copies of the presets in params/, a README of the commands, a
Makefile naming them, and a .gitignore for what xfer writes there."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from xfer.paths import PACKAGE, package_file, writing

# what `init` writes (relative to the project folder) -> the packaged file it copies
TEMPLATE = {"README.md": ("template", "README.md"), "Makefile": ("template", "Makefile"),
            ".gitignore": ("template", "gitignore")}


def init(folder: str | Path = ".") -> int:
    """Write the files a project starts from into `folder`; a file already there is kept (a
    second `init` adds the presets of a newer xfer and changes nothing of the user's)."""
    folder = Path(folder).resolve()
    if folder.is_relative_to(PACKAGE):
        print(f"error: init: {folder} is inside the xfer package ({PACKAGE}); allowed: a folder of your own",
              file=sys.stderr)
        return 2
    files = {f"params/{p.name}": p for p in sorted(package_file("params").glob("*.yaml"))}
    files.update({name: package_file(*parts) for name, parts in TEMPLATE.items()})
    wrote, kept = [], []
    for name, source in files.items():
        path = folder / name
        if path.exists():
            kept.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with writing(tmp):
            tmp.write_bytes(source.read_bytes())
            os.replace(tmp, path)
        wrote.append(name)
    print(f"xfer project in {folder}: wrote {len(wrote)} files" + (f", kept {len(kept)} already there" if kept else "")
          + f"\nnext: cd {folder}; export XFER_DATA_DIR=<the benchmarks' folder>; xfer plan cpu (README.md lists the rest)")
    return 0
