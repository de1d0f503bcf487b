"""`async with` for the project's async clients, defined once.

A class that holds sessions or connections derives from ``AsyncClosing`` and
overrides ``close``; leaving the block closes it, on success or error alike.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncClosing:
    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release what the object holds; safe to call more than once."""
