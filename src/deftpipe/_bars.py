"""A transient Rich progress bar fed by ``progress(done, total)`` callbacks.

Long data-layer jobs (synthetic generation, the DeepPCB import) report progress through such a
callback and stay free of Rich; the CLI and the demo turn it into a bar with this.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import Progress


@contextlib.contextmanager
def counting_bar(console: Console, description: str) -> Iterator[Callable[[int, int], None]]:
    """Yield ``progress(done, total)``; the bar shows a spinner until the first call sets the total."""
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
