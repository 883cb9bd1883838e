"""The ``volcam`` command: thin front door over the API, one sub-command per job.

Add a command with ``@app.command()`` like any typer app: every command registered on ``app`` has
its :class:`~volcam.errors.VolcamError` printed as one line (``volcam: error: ...``) with exit
status 2, never a traceback, and warnings printed as one ``volcam: warning: ...`` line each.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from volcam.errors import VolcamError

__all__ = ["app"]


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``command`` with user errors as one line on stderr (exit 2) and warnings as one line each."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        def show(message, category, filename, lineno, file=None, line=None) -> None:
            typer.echo(f"volcam: warning: {message}", err=True)

        previous = warnings.showwarning
        warnings.showwarning = show
        try:
            return command(*args, **kwargs)
        except VolcamError as error:
            typer.echo(f"volcam: error: {error}", err=True)
            raise typer.Exit(2) from None
        finally:
            warnings.showwarning = previous

    return run


class VolcamApp(typer.Typer):
    """A typer app whose commands report :class:`VolcamError` as one line instead of a traceback."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)

        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            register(_one_line_errors(function))
            return function

        return decorator


app = VolcamApp(
    name="volcam",
    help="Class activation maps for 3D medical-imaging classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Class activation maps for 3D medical-imaging classifiers: CT/MR volumes, ultrasound clips."""


def _numbers(values: tuple[float, ...], unit: str) -> str:
    return " × ".join(f"{v:.4g}" for v in values) + (f" {unit}" if unit else "")


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A DICOM folder or file, NIfTI, NRRD/MHA or video file.")],
) -> None:
    """Show what PATH holds: series, sizes, spacing, orientation, frames and problems (no patient data)."""
    from volcam.io.info import describe

    found, skipped = describe(path)
    lines = []
    if skipped or len(found) > 1:
        passed = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        lines.append(f"{path}: {len(found)} series" + (f" (skipped: {passed})" if passed else ""))
    for item in found:
        name = item.series_uid or item.source
        described = f" '{item.description}'" if item.description else ""
        lines.append(f"{name}{described}")
        lines.append(f"  modality     {item.modality}")
        if item.kind == "clip":
            lines.append(
                f"  frames       {item.shape[0]} × {item.shape[1]} × {item.shape[2]} (frames × rows × columns)"
            )
            if len(item.shape) > 3:
                lines.append("  colour       RGB")
            interval = f"{item.frame_interval * 1000:.4g} ms" if item.frame_interval else "unknown"
            lines.append(f"  frame time   {interval}")
            lines.append(f"  pixel size   {_numbers(item.spacing[1:], 'mm')}")
        elif item.shape:
            lines.append(f"  size         {_numbers(item.shape[:3], '')} (voxel axes as loaded)")
            lines.append(f"  spacing      {_numbers(item.spacing[:3], 'mm')}")
            lines.append(f"  orientation  {item.orientation}")
        lines.append(f"  problems     {'; '.join(item.problems) if item.problems else 'none'}")
    typer.echo("\n".join(lines))


def main() -> None:
    """Entry point for ``python -m volcam.cli``."""
    app()


if __name__ == "__main__":
    sys.exit(main())
