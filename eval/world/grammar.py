"""Caption grammar of the embedded world: the attribute vocabulary, captions and their parser.

A caption states some of five attributes of one object on a plain background::

    a small red circle at the top left on a blue background

``[a|an] [size] [colour] shape [at the position] [on a|an colour background]``; only the shape is
required. :func:`caption` writes the canonical form, :func:`parse` reads it back (and the shorter
forms), so the checker checks exactly what a caption says and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

# Palette (sRGB, 0-255). Pairwise distances are >= 115, so nearest-colour naming is robust.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (215, 40, 40)),
    ("green", (40, 170, 60)),
    ("blue", (45, 80, 215)),
    ("yellow", (235, 210, 50)),
    ("purple", (150, 50, 170)),
    ("white", (240, 240, 240)),
    ("black", (25, 25, 25)),
)
COLOURS: tuple[str, ...] = tuple(name for name, _ in PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
# Row-major 3x3 grid; the name of cell (row, col) is POSITIONS[3 * row + col].
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
ATTRIBUTES: tuple[str, ...] = ("size", "colour", "shape", "position", "background")
CHOICES: dict[str, tuple[str, ...]] = {
    "size": SIZES, "colour": COLOURS, "shape": SHAPES, "position": POSITIONS, "background": COLOURS,
}
EXTRA_WORDS: tuple[str, ...] = ("a", "an", "at", "the", "on", "background", "of", "image", "photo", "with")

_ALT = {"centre": "center", "middle": "center", "big": "large", "tiny": "small"}
_CAPTION_RE = re.compile(
    r"^(?:an? )?(?:(?P<size>\w+) )?(?:(?P<colour>\w+) )?(?P<shape>\w+)"
    r"(?: (?:at|in) the (?P<position>(?:top|bottom) (?:left|right)|top|bottom|left|right|center))?"
    r"(?: on (?:an? )?(?P<background>\w+) background)?$"
)


@dataclass(frozen=True)
class Attributes:
    """What a caption says; ``None`` means the caption does not say it."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    position: str | None = None
    background: str | None = None

    def stated(self) -> dict[str, str]:
        """The attributes the caption states, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def with_(self, attribute: str, value: str) -> "Attributes":
        """A copy with one attribute replaced (validated)."""
        if attribute not in CHOICES or value not in CHOICES[attribute]:
            raise ValueError(f"attribute {attribute!r} cannot take value {value!r}")
        return replace(self, **{attribute: value})

    def validate(self) -> "Attributes":
        """Raise ValueError naming the first attribute whose value is outside the vocabulary."""
        for name, value in self.stated().items():
            if value not in CHOICES[name]:
                raise ValueError(f"caption attribute {name}={value!r} is not one of {CHOICES[name]}")
        if self.shape is None:
            raise ValueError("a caption must name a shape")
        return self


def caption(attrs: Attributes) -> str:
    """Canonical English caption of the stated attributes."""
    attrs.validate()
    words = [w for w in (attrs.size, attrs.colour, attrs.shape) if w is not None]
    text = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    if attrs.position is not None:
        text += f" at the {attrs.position}"
    if attrs.background is not None:
        text += f" on {'an' if attrs.background[0] in 'aeiou' else 'a'} {attrs.background} background"
    return text


def parse(text: str) -> Attributes:
    """Read a caption of the grammar back into attributes; ValueError names what is not understood."""
    norm = " ".join(_ALT.get(w, w) for w in re.sub(r"[^a-z ]", " ", text.lower()).split())
    m = _CAPTION_RE.match(norm)
    if m is None:
        raise ValueError(f"caption {text!r} does not follow the world grammar '[a] [size] [colour] shape "
                         "[at the position] [on a colour background]'")
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    # With only one modifier word before the shape the regex puts it in `size`; move colours over.
    if "size" in g and "colour" not in g and g["size"] in COLOURS:
        g["colour"] = g.pop("size")
    return Attributes(**g).validate()


def vocabulary() -> list[str]:
    """Every word the grammar can write, sorted (tokenizers give each one its own token)."""
    words = set(EXTRA_WORDS) | set(SIZES) | set(SHAPES) | set(COLOURS)
    for p in POSITIONS:
        words.update(p.split())
    return sorted(words)
