"""A local TAO-contract image for the docker and Slurm tests, built with no registry.

``docker import`` of a root-filesystem tarball made from this host's files: bash and coreutils, the
Python interpreter and its standard library, every shared library they and the venv's compiled
extensions link to (an ``ldd`` closure), deftpipe's source, and ``/usr/local/bin/visual_changenet``,
which runs deftpipe's stand-in trainer (``deftpipe.tao.standin``: TAO's file contract, deftpipe's
built-in CNN, not TAO's model). The venv's third-party packages (torch, numpy, pandas, …; ~1.5 GB) are
**not** baked in: the tests bind-mount that ``site-packages`` read-only at ``SITE`` (one more mount in
the job's mount list, like any TAO data mount). The image's default user is ``65534`` (nobody), so a
job that is not run as the invoking user writes files deftpipe cannot own, and the tests notice.

The tag is ``deftpipe-tao-standin:<hash>`` of everything baked in, so an unchanged tree reuses the
image (a from-scratch build takes seconds).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import deftpipe

REPO = "deftpipe-tao-standin"
SITE = "/opt/tao-site-packages"  # where the tests mount the venv's site-packages (read-only)
SRC = Path(deftpipe.__file__).resolve().parent  # the deftpipe package baked into the image
PYTHON = os.path.realpath(sys.base_prefix + "/bin/python3")  # this interpreter, at its own path in the image
ENTRY = f"""#!/bin/sh
# TAO's CLI name; deftpipe's stand-in trainer behind it (the image holds no TAO code)
export PYTHONPATH=/opt/deftpipe:{SITE}
exec {PYTHON} -m deftpipe.tao.standin "$@"
"""
TOOLS = ("bash", "sh", "env", "id", "cat", "ls", "mkdir", "rm", "sleep", "timeout", "true")


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _ldd(paths: list[str]) -> set[str]:
    out: set[str] = set()
    for i in range(0, len(paths), 200):
        res = subprocess.run(["ldd", *paths[i:i + 200]], capture_output=True, text=True, check=False)
        for line in res.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                out.add(parts[2])
            elif parts and parts[0].startswith("/") and "(" in line:
                out.add(parts[0])  # the loader itself
    return out


def _usr(path: str) -> str:
    """``path`` as it lies in a merged-/usr tree (``/lib/x`` -> ``usr/lib/x``), without the leading slash."""
    path = os.path.normpath(path).lstrip("/")
    top = path.split("/", 1)[0]
    return f"usr/{path}" if top in ("bin", "lib", "lib64", "sbin") else path


def _files() -> tuple[dict[str, str], dict[str, str]]:
    """(arcname -> host file baked in, arcname -> symlink target): real files at their real paths, a
    link at every other name the loader or a tool asks for (sonames, /lib64/ld-linux…)."""
    python = PYTHON
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tools = [p for t in TOOLS if (p := _which(t))]
    sos = [str(p) for p in _site_packages().rglob("*.so*") if p.is_file()]
    sos += [str(p) for p in stdlib.rglob("*.so") if p.is_file()]
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    for p in [python, *tools, *_ldd([python, *tools, *sos])]:
        real = os.path.realpath(p)
        if real.startswith(str(_site_packages().resolve()) + "/"):
            continue  # the packages' own bundled libraries come with the site-packages mount
        files[_usr(real)] = real
        if _usr(p) != _usr(real):
            links[_usr(p)] = "/" + _usr(real)
    for p in stdlib.rglob("*"):
        rel = p.parts[len(stdlib.parts):]
        if p.is_file() and not {"__pycache__", "site-packages", "dist-packages"} & set(rel) and rel[0] != "test":
            files[_usr(str(p))] = str(p)
    for p in SRC.rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts:
            files["opt/deftpipe/deftpipe/" + str(p.relative_to(SRC))] = str(p)
    return files, links


def _which(name: str) -> str | None:
    for d in ("/usr/bin", "/bin", "/usr/sbin"):
        if os.path.exists(f"{d}/{name}"):
            return f"{d}/{name}"
    return None


def _tag(files: dict[str, str]) -> str:  # names, sizes, mtimes: cheap, and any edit changes it
    h = hashlib.sha256(ENTRY.encode())
    for arc in sorted(files):
        st = os.stat(files[arc])
        h.update(f"{arc}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return f"{REPO}:{h.hexdigest()[:16]}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def build_image() -> str:
    """Build the image if its tag is missing; return the tag."""
    files, links = _files()
    tag = _tag(files)
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode == 0:
        return tag
    dirs = {"etc", "opt", SITE.lstrip("/"), "root", "proc", "sys", "dev", "usr/local/bin", "usr/lib64"}
    for arc in [*files, *links]:
        parent = os.path.dirname(arc)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        for d in sorted(dirs):
            _add_dir(tar, d)
        _add_dir(tar, "tmp", 0o1777)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
            _add_link(tar, link, target)
        for arc, host in sorted(files.items()):
            tar.add(host, arcname=arc, recursive=False)
        for arc, target in sorted(links.items()):
            if arc not in files:
                _add_link(tar, arc, target)
        _add_bytes(tar, "usr/local/bin/visual_changenet", ENTRY.encode(), 0o755)
        _add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n")
        _add_bytes(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    res = subprocess.run(["docker", "import", "--change", "USER 65534", "--change", "WORKDIR /tmp",
                          "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin", "-", tag],
                         input=buf.getvalue(), capture_output=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"docker import failed: {res.stderr.decode(errors='replace')[-500:]}")
    return tag


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)


def site_mount() -> dict[str, str]:
    """The read-only mount of this venv's third-party packages that the image expects at ``SITE``."""
    return {"host_path": str(_site_packages()), "container_path": SITE, "mode": "ro"}


if __name__ == "__main__":
    print(build_image())
