"""Fill-in-the-middle formats: how an IDE's autocomplete asks a code model for the middle.

An IDE sends ``/v1/completions`` with a raw prompt built from the text before
(prefix) and after (suffix) the cursor, wrapped in the model's own FIM tokens.
The gateway's ``coder-fim`` alias hides which model serves it, so the format is
part of the profile (``models.fim.fim_format`` or ``models.chat.fim_format``),
inferred from the model id for the families below. A model without FIM tokens
gets the prefix only: autocomplete degrades to continuing the text.
"""

from __future__ import annotations

from dataclasses import dataclass

from .profile import Profile


@dataclass(frozen=True)
class FimFormat:
    """The three FIM tokens of a model family (all empty for ``none``)."""

    name: str
    prefix: str = ""
    suffix: str = ""
    middle: str = ""

    @property
    def native(self) -> bool:
        return bool(self.prefix)

    def prompt(self, before: str, after: str) -> str:
        """The raw prompt an IDE sends: prefix-suffix-middle order (PSM), or the prefix alone.

        Given placeholders instead of text, it is the template a client such as Continue fills in.
        """
        if not self.native:
            return before
        return f"{self.prefix}{before}{self.suffix}{after}{self.middle}"


#: Published FIM tokens of the code-model families the profiles use or a forker is likely to.
FORMATS = {
    "qwen": FimFormat("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder
    "starcoder": FimFormat("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, StarCoder2
    "deepseek": FimFormat("deepseek", "<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>",
                          "<\uff5cfim\u2581end\uff5c>"),  # DeepSeek-Coder
    "none": FimFormat("none"),
}

#: Lower-cased substrings of model ids whose family is known.
_FAMILIES = (("qwen2.5-coder", "qwen"), ("qwen3-coder", "qwen"), ("starcoder", "starcoder"),
             ("deepseek-coder", "deepseek"))


def format_for(profile: Profile) -> FimFormat:
    """The FIM format behind ``coder-fim``: the profile's ``fim_format``, else inferred from the model id."""
    model = profile.alias_model("fim")
    if "fim_format" in model:
        return FORMATS[model["fim_format"]]
    model_id = model["id"].lower()
    return next((FORMATS[name] for needle, name in _FAMILIES if needle in model_id), FORMATS["none"])
