"""The prompt ensemble (docs/design.md §5), torch-free: export and runtime share it."""

from __future__ import annotations

from clipxai.contract import DEFAULT_TEMPLATES  # noqa: F401  (re-exported: a key of TEMPLATE_CHOICES)

TEMPLATE_SET = "clip-surgery-85"

# The 80 ImageNet templates of the CLIP paper plus five scene templates.
TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
    "there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.",
)
assert len(TEMPLATES) == 85

# ``clipxai export --templates NAME|FILE``: the named sets (name -> (manifest set name, templates)).
SINGLE_TEMPLATE = "a photo of a {}."  # TaI-DPT's and CLIP's plain prompt
TEMPLATE_CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai-85": (TEMPLATE_SET, TEMPLATES),
    "single": ("single", (SINGLE_TEMPLATE,)),
}
assert DEFAULT_TEMPLATES in TEMPLATE_CHOICES
FILE_SET = "file"           # the manifest's templates.set for templates read from a file
MAX_TEMPLATES = 1024


def template_problem(template) -> str | None:
    """Why ``template`` is not a usable prompt template (None: it is): exactly one ``{}``, no other braces."""
    try:
        ok = isinstance(template, str) and template.count("{}") == 1 and template.format("\0").count("\0") == 1
    except (ValueError, IndexError, KeyError):
        ok = False
    return None if ok else (f"template {template!r} must contain exactly one '{{}}' for the class name "
                            "(and no other braces)")


def resolve_templates(choice: str) -> tuple[str, tuple[str, ...]]:
    """``--templates`` -> (the manifest's set name, the templates): a name of TEMPLATE_CHOICES, or a
    UTF-8 file with one template per line (blank lines skipped). ClipxaiError (one line) for a missing
    or empty file or a template without ``{}``; the 77-token limit is checked by the exporter."""
    from pathlib import Path

    from clipxai.errors import ClipxaiError
    if choice in TEMPLATE_CHOICES:
        return TEMPLATE_CHOICES[choice]
    path = Path(choice)
    if not path.is_file():
        raise ClipxaiError(f"--templates {choice}: neither {' nor '.join(TEMPLATE_CHOICES)} nor a file")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ClipxaiError(f"--templates {choice}: cannot be read ({e})") from None
    templates = tuple(ln for ln in lines if ln)
    if not templates:
        raise ClipxaiError(f"--templates {choice}: the file has no template (one per line, with {{}})")
    if len(templates) > MAX_TEMPLATES:
        raise ClipxaiError(f"--templates {choice}: {len(templates)} templates, more than {MAX_TEMPLATES}")
    for t in templates:
        if (problem := template_problem(t)) is not None:
            raise ClipxaiError(f"--templates {choice}: {problem}")
    return FILE_SET, templates
