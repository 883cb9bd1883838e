"""The dock's status line and last error, without Qt: HTML for the panel's label, one line per error."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from volcam.errors import error_line


def error_text(error: BaseException) -> str:
    """One line for a person (:func:`volcam.errors.error_line`)."""
    return error_line(error, limit=2000)


@dataclass
class Status:
    """What the status line says, and the one line of the last failure ("" since a job started)."""

    text: str = ""
    last_error: str = ""

    def fail(self, error: BaseException | str) -> str:
        """Record a failure; returns its one line (also in :attr:`last_error`)."""
        self.last_error = error if isinstance(error, str) else error_text(error)
        self.text = f"<span style='color:#e55'>error: {self.last_error}</span>"
        return self.last_error

    def running(self, methods: Sequence[str]) -> None:
        self.last_error = ""
        self.text = f"explaining with {', '.join(methods)} …"

    def cancelled(self) -> None:
        self.text = "cancelled"

    def say(self, text: str) -> str:
        self.text = text
        return text

    def shown(self, method: str, explanation: Any) -> str:
        """The line for a finished map: the prediction, what was explained, and the map's warnings."""
        probabilities = ", ".join(f"{k} {v:.3f}" for k, v in explanation.probabilities.items())
        seconds = sum(explanation.timings.values())
        text = (
            f"<b>prediction: {explanation.prediction}</b> ({probabilities})<br>"
            f"{method} for class '{explanation.target}' at {', '.join(explanation.layers)} in {seconds:.2f} s"
        )
        for line in explanation.warnings:  # a map that shows nothing says so (an all-zero map looks like no map)
            text += f"<br><span style='color:#e9a23b'>warning: {html.escape(line)}</span>"
        return self.say(text)
