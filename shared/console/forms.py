"""Reading a submitted form (``application/x-www-form-urlencoded``), bounded."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from shared.errors import InputError

MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 2000
"""No console form is near this; a bigger body is not one of ours."""


@dataclass(frozen=True)
class Form:
    """A submitted form: each field's values in the order sent."""

    fields: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, body: bytes) -> Form:
        if len(body) > MAX_FORM_BYTES:
            raise InputError("the form is too large")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("the form is not UTF-8 text") from None
        try:
            return cls(tuple(parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)))
        except ValueError:
            raise InputError(f"the form has more than {MAX_FIELDS} fields") from None

    def get(self, name: str, default: str = "") -> str:
        """The field's first value, stripped; ``default`` when absent."""
        return next((v.strip() for k, v in self.fields if k == name), default)

    def all(self, name: str) -> list[str]:
        """Every value of the field, stripped, in order."""
        return [v.strip() for k, v in self.fields if k == name]

    def checked(self, name: str) -> bool:
        """Whether a checkbox was ticked (a ticked box is sent; an unticked one is not)."""
        return any(k == name for k, _ in self.fields)
