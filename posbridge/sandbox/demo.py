"""Demo members every fresh sandbox starts with, so a first run and the tests need no seeding.

Callers can rely on `OW7K2M9Q` (card number `4000123456789`, an accented Spanish name, 120 points) and
on the member `OW-ÁÉÍ-001` used by the `unicode-names.json` fixture. `demo_members()` returns fresh
copies: changing them (or a sandbox's balances) never changes the next sandbox.
"""

from __future__ import annotations

from posbridge.sandbox.state import Member

_DEMO: tuple[dict[str, object], ...] = (
    {"id": "OW7K2M9Q", "card_number": "4000123456789", "name": "María José Núñez Peña",
     "email": "maria.nunez@example.com", "points": 120, "level": "gold"},
    {"id": "OW3HX8RT", "card_number": "4000123456796", "name": "Jordi Puig i Ferrer",
     "email": "jordi.puig@example.com", "points": 0, "level": "basic"},
    {"id": "OW-ÁÉÍ-001", "card_number": "4000123456802", "name": "Ángela Íñiguez Ñúñez",
     "email": "angela.iniguez@example.com", "points": 45, "level": "silver"},
    {"id": "OW9PL4VC", "card_number": "4000123456819", "name": "Iñaki Etxeberria Goñi",
     "email": "inaki.etxeberria@example.com", "points": 2500, "level": "platinum"},
    {"id": "OW5DZ6NB", "card_number": "4000123456826", "name": "Lucía Martín Sánchez",
     "email": None, "points": 7, "level": "basic"},
)

#: The member most examples and tests use.
DEMO_MEMBER_ID = "OW7K2M9Q"
DEMO_CARD_NUMBER = "4000123456789"


def demo_members() -> list[Member]:
    """Fresh `Member` objects for the demo set."""
    return [Member.model_validate(m) for m in _DEMO]


__all__ = ["DEMO_CARD_NUMBER", "DEMO_MEMBER_ID", "demo_members"]
