"""Model text -> safe HTML: Markdown (markdown-it-py) with LaTeX as MathML (latex2mathml).

Model output is untrusted. markdown-it runs with raw HTML off (a `<script>` in a sample is text) and
images off (nothing loads from the network); math is converted on the server to MathML, which the
browser draws natively, so no math script ships or runs. latex2mathml copies `\\text{...}` bodies
into its output verbatim, so its tree is rebuilt through a whitelist of MathML tags and attributes
and serialized by ElementTree, which escapes every text node.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from html import escape, unescape

from latex2mathml.converter import convert_to_element
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

MAX_MATH_CHARS = 4000  # longer "math" is shown as code: it is rarely math, and conversion cost grows with it
MATHML_TAGS = frozenset([
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "mfrac", "msqrt", "mroot", "mstyle", "merror",
    "mpadded", "mphantom", "mfenced", "menclose", "msub", "msup", "msubsup", "munder", "mover", "munderover",
    "mmultiscripts", "mprescripts", "none", "mtable", "mtr", "mtd", "mlabeledtr", "semantics", "annotation"])
MATHML_ATTRIBUTES = frozenset([
    "display", "mathvariant", "mathsize", "stretchy", "fence", "separator", "separators", "lspace", "rspace",
    "accent", "accentunder", "movablelimits", "largeop", "symmetric", "minsize", "maxsize", "linethickness",
    "columnalign", "rowalign", "columnspacing", "rowspacing", "columnlines", "rowlines", "frame", "displaystyle",
    "scriptlevel", "notation", "open", "close", "width", "height", "depth", "voffset", "form", "rowspan",
    "columnspan"])
_BRACKET_DISPLAY = re.compile(r"\\\[(.+?)\\\]", re.DOTALL)
_BRACKET_INLINE = re.compile(r"\\\((.+?)\\\)", re.DOTALL)


def _clean(element: ET.Element) -> ET.Element:
    """A copy of the MathML tree holding only whitelisted tags and attributes; anything else is text."""
    tag = element.tag.rsplit("}", 1)[-1]
    if tag not in MATHML_TAGS:
        text = ET.Element("mtext")
        text.text = unescape("".join(element.itertext()))
        return text
    clean = ET.Element(tag, {k: v for k, v in element.attrib.items() if k in MATHML_ATTRIBUTES})
    clean.text = unescape(element.text) if element.text else None  # latex2mathml writes entities as text
    for child in element:
        copy = _clean(child)
        copy.tail = unescape(child.tail) if child.tail else None
        clean.append(copy)
    return clean


def latex_to_mathml(latex: str, display: bool) -> str:
    """Safe MathML for `latex`, or the LaTeX itself as escaped code when it does not convert."""
    source = f'<code class="tex">{escape(latex)}</code>'
    if len(latex) > MAX_MATH_CHARS:
        return source
    try:
        tree = _clean(convert_to_element(latex, display="block" if display else "inline"))
    except Exception:  # noqa: BLE001 - any parser failure on model text falls back to the source
        return source
    tree.set("xmlns", "http://www.w3.org/1998/Math/MathML")
    return ET.tostring(tree, encoding="unicode", method="html")


def _math_renderer(content: str, options: dict) -> str:
    return latex_to_mathml(content, bool(options.get("display_mode")))


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True})
    md.disable("image")  # an image would load from wherever the model pointed it; `breaks`: traces are line-based
    md.enable("table")
    dollarmath_plugin(md, double_inline=True, allow_digits=False, renderer=_math_renderer)
    return md


def markdown_html(text: str | None) -> str:
    """Markdown + LaTeX (`$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]`) as HTML that holds no model-made markup."""
    if not text:
        return ""
    text = _BRACKET_DISPLAY.sub(lambda m: f"$${m.group(1)}$$", text)
    text = _BRACKET_INLINE.sub(lambda m: f"${m.group(1)}$", text)
    return _markdown().render(text)
