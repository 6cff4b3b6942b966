"""Warm notebook kernels: a run's kernel forked from a server that has already imported torch
and transformers, instead of a fresh `python -m ipykernel_launcher` that imports them again.

Every run of a grid executes its phase notebook in a kernel of its own, and a fresh kernel spends
about 4 s starting and importing torch, transformers and xfer before the first cell does any work
(`make bench`: 4.2 s fresh, 0.6 s forked warm), a sixth of a small CPU run. A grid's worker
process (`local.run_grid`, on a machine without CUDA) therefore starts one `multiprocessing`
fork server with those modules preloaded, and each later kernel is a fork of it. The kernel is the ordinary ipykernel, started with the command line, environment and working
folder jupyter_client prepared, and its stdout and stderr are the worker's (the run's log.txt);
papermill and nbclient see a normal kernel. Only the way its process is made differs.

The fork server starts with the worker's environment: a worker serves one grid, whose
environment does not change between runs. Kernels from any other kernelspec start as usual."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import CaselessStrEnum

# what a phase notebook imports anyway; a module that fails to import is skipped by the server
PRELOAD = ["torch", "transformers", "transformers.modeling_utils", "transformers.models.bert.modeling_bert",
           "transformers.models.xlm_roberta.modeling_xlm_roberta", "tokenizers", "pandas", "ipykernel.kernelapp",
           "xfer.loop", "xfer.train", "xfer.evaluate", "xfer.multitask", "xfer.runner", "xfer.models.warm"]
LAUNCHER = ["-m", "ipykernel_launcher"]


def warm_tokenizer(checkpoint: str) -> None:
    """Have the fork server, if it is not started yet, load `checkpoint`'s tokenizer when it starts
    (`xfer.models.warm`): a worker's first run names its upstream, and every checkpoint of a grid
    stores the same tokenizer files. A hub id or any other folder is loaded by the kernel as before."""
    if (Path(checkpoint) / "tokenizer.json").is_file():
        os.environ.setdefault("XFER_WARM_TOKENIZER", str(checkpoint))


def server():
    """This process's fork server context, preloading PRELOAD when it first starts."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class Fd:
    """A file descriptor handed to a forked kernel: pickled as multiprocessing's DupFd, so the
    server passes a duplicate over its socket, and unpickled as the child's own descriptor."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction

        return _detach, (reduction.DupFd(self.fd),)


def _detach(dup) -> int:
    return dup.detach()


def kernel_main(argv: list[str], env: dict, cwd: str, stdout: int, stderr: int) -> None:
    """In the forked child: become what `Popen(cmd, env=env, cwd=cwd, start_new_session=True)`
    would have started, then run ipykernel."""
    os.setsid()  # its own session and process group, so an interrupt reaches the kernel alone
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd in {stdout, stderr} - {0, 1, 2}:
        os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # it exits when the worker that asked for it goes (killed with the runner), as a kernel started by
    # the worker would; the server cannot tell it, since every child of the server keeps the server up
    threading.Thread(target=exit_with, args=(multiprocessing.parent_process().sentinel,), daemon=True).start()
    # ... and when the server goes (ipykernel read JPY_PARENT_PID when the server imported it)
    argv = [*argv, f"--IPKernelApp.parent_handle={os.getppid()}"]
    sys.argv = [sys.executable, *LAUNCHER, *argv]
    from ipykernel.kernelapp import launch_new_instance

    launch_new_instance(argv=argv)


def exit_with(sentinel) -> None:
    """Exit this process once `sentinel`'s process is gone."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


class Forked:
    """A forked kernel process as the `Popen` that LocalProvisioner manages."""

    stdin = stdout = stderr = None

    def __init__(self, process):
        self.process, self.pid = process, process.pid

    def poll(self):
        return self.process.exitcode

    def wait(self, timeout=None):
        self.process.join(timeout)
        return self.process.exitcode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def same_python(executable: str) -> bool:
    """Whether a kernelspec's Python is this process's, in the same environment: compared by
    folder with links resolved, so a venv reached through a link (a worktree's `.venv`) counts as
    itself, while the base interpreter every venv links to does not make two venvs one."""
    def where(path):
        return os.path.realpath(os.path.dirname(os.path.abspath(path)))

    return os.path.basename(executable).startswith("python") and where(executable) == where(sys.executable)


class ForkProvisioner(LocalProvisioner):
    """LocalProvisioner whose kernel is forked from the warm server when the kernelspec is
    ipykernel's own launcher (any other command starts as a subprocess, as usual)."""

    async def launch_kernel(self, cmd: list[str], **kwargs):
        k = next((i for i in range(len(cmd)) if cmd[i:i + 2] == LAUNCHER), None)
        if k is None or not same_python(cmd[0]):
            return await super().launch_kernel(cmd, **kwargs)
        process = server().Process(target=kernel_main, name="xfer-kernel", args=(
            cmd[k + 2:], dict(kwargs.get("env") or os.environ), str(kwargs.get("cwd") or os.getcwd()),
            Fd(1), Fd(2)))
        process.start()
        self.process = Forked(process)
        self.pid = self.pgid = process.pid  # its own group once it runs setsid; until then killpg fails and
        self.cwd = kwargs.get("cwd")       # LocalProvisioner falls back to signalling the pid alone
        return self.connection_info


class IpcKernelManager(AsyncKernelManager):
    """The kernel manager papermill gets in a grid's worker: the usual one, talking to its kernel over
    Unix sockets of its own instead of TCP ports. jupyter_client picks a TCP port by binding port 0
    and letting it go for the kernel to bind, so two workers starting kernels at one moment can be
    handed the same port, and one kernel dies "before replying to kernel_info" (jupyter_client#487;
    seen once in CI with two workers). A socket path named for the kernel cannot be taken by another."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    async def _async_pre_start_kernel(self, **kw):
        # short (a socket path has ~100 bytes), unique, and removed with the kernel (cleanup_ipc_files)
        self.ip = os.path.join(tempfile.gettempdir(), f"xfer-kernel-{uuid.uuid4().hex[:12]}")
        return await super()._async_pre_start_kernel(**kw)


class WarmKernelManager(IpcKernelManager):
    """The same, with ForkProvisioner: its kernels are forked warm (on a CPU machine)."""

    async def _async_pre_start_kernel(self, **kw):
        if self.provisioner is None:
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = ForkProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
        return await super()._async_pre_start_kernel(**kw)
