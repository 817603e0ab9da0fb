"""`cadbench list`: methods (with their options) and backbones, with trainable and total parameter counts (meta
device)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap

from cadbench.commands.arguments import add_cell_selection, image_size_list


def register(commands) -> None:
    parser = commands.add_parser("list", help="methods (with their options) and backbones with trainable/total "
                                              "parameter counts")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of tables")
    add_cell_selection(parser)
    parser.add_argument("--image-size", type=image_size_list, default=None,
                        help="count parameters for these input sides in pixels, e.g. 512 (the encoder's position "
                             "tables are resized to the token grid; default: each backbone's native size)")
    parser.set_defaults(handler=run)


def resolve_methods(specs: list[str] | None) -> list[str]:
    """The canonical text of each method spec, checked ('lora:rank=4' -> 'lora'); by default every method that can
    run here."""
    from cadbench.registry import default_methods, parse_method_spec

    return list(dict.fromkeys(parse_method_spec(spec).text for spec in specs or default_methods()))


def resolve_backbones(names: list[str] | None) -> list[str]:
    from cadbench.backbones import require_backbone

    names = names or listed_backbones()
    for name in names:
        require_backbone(name)
    return names


def listed_backbones() -> list[str]:
    """What `cadbench list` shows by default: the default grid's backbones, then every other one that can be built
    here (LiteMedSAM with the `lite` extra: the CPU trains it in the default run); test-scale ones only when named."""
    from cadbench.backbones import BACKBONES, default_backbones

    grid = default_backbones()
    return [*grid, *(name for name, spec in BACKBONES.items()
                     if name not in grid and not spec.test_scale and spec.missing_requirement() is None)]


def run(args: argparse.Namespace) -> int:
    from cadbench.backbones import BACKBONES, left_out_notes
    from cadbench.families import FAMILIES
    from cadbench.params import count_parameters
    from cadbench.registry import parse_method_spec, unavailable_methods
    from cadbench.vocabulary.resolution import NATIVE_IMAGE_SIZE
    from cadbench.vocabulary.method_spec import method_label

    specs = resolve_methods(args.methods)
    backbones = resolve_backbones(args.backbone)
    left_out = {} if args.methods else unavailable_methods()
    for name, reason in left_out.items():
        print(f"cadbench: note: method {name} is not listed: it {reason}", file=sys.stderr)
    for note in [] if args.backbone else left_out_notes("listed"):
        print(f"cadbench: note: {note}", file=sys.stderr)
    sizes = args.image_size or [NATIVE_IMAGE_SIZE]
    pairs = []  # (backbone, method spec) where the method is defined on the backbone's model family
    for backbone in backbones:
        for spec in specs:
            reason = parse_method_spec(spec).method.not_defined_on(BACKBONES[backbone].family)
            if reason:
                print(f"cadbench: note: {spec} is not counted on {backbone}: it is not defined there ({reason})",
                      file=sys.stderr)
            else:
                pairs.append((backbone, spec))
    combinations = [(backbone, size, spec) for backbone, spec in pairs for size in sizes]
    counts = [count_parameters(spec, backbone, size) for backbone, size, spec in combinations]
    if args.json:
        declared = {spec: [info.as_dict() for info in parse_method_spec(spec).method.Options.declared()]
                    for spec in specs}
        print(json.dumps([{**count.as_dict(), "options": declared[spec],
                           "own_definition": parse_method_spec(spec).method.own_definition_on.get(
                               BACKBONES[backbone].family)}
                          for count, (backbone, _, spec) in zip(counts, combinations)], indent=2))
        return 0
    width = shutil.get_terminal_size((0, 0)).columns  # 0: not a terminal (a pipe, a file): one line per entry
    print("Methods (options: NAME:OPTION=VALUE,...):")
    for name in dict.fromkeys(parse_method_spec(spec).name for spec in specs):
        method = parse_method_spec(name).method
        _print_entry(f"  {name:<14} ", method.summary, width)
        details = [f"{info.name}: {info.type}, default {info.default} — {info.help}"
                   for info in method.Options.declared()]
        details += [method.Options.more_help] if method.Options.more_help else []
        details += [f"on {FAMILIES[family].label}: {method.own_definition_on[family]}"
                    for family in dict.fromkeys(BACKBONES[backbone].family for backbone, _ in pairs)
                    if family in method.own_definition_on]
        for detail in details:
            _print_entry(" " * 19, detail, width, indent=21)
    print("\nBackbones:")
    for name in backbones:
        spec = BACKBONES[name]
        _print_entry(f"  {spec.label:<22} ", spec.describe, width)
    print("\nParameters (counted on the meta device, nothing allocated):")
    print(_aligned([("method", "backbone", "px", "trainable_params", "total_params", "trainable_%")] + [
        (method_label(count.method, count.method_options), BACKBONES[count.backbone].label, str(count.image_px),
         f"{count.trainable_params:,}", f"{count.total_params:,}",
         f"{100 * count.trainable_params / count.total_params:.2f}") for count in counts]))
    return 0


def _print_entry(head: str, text: str, width: int, indent: int | None = None) -> None:
    """`head` and `text`, wrapped to `width` columns with the lines after the first indented under the text (or to
    `indent`); on one line when `width` is 0 or too narrow to help."""
    indent = len(head) if indent is None else indent
    if width - indent < 30:
        print(head + text)
        return
    print(textwrap.fill(text, width=width, initial_indent=head, subsequent_indent=" " * indent,
                        break_long_words=False, break_on_hyphens=False))


def _aligned(lines: list[tuple[str, ...]]) -> str:
    """Text columns, the first two left-aligned and the numbers right-aligned (pandas is not imported for this: it
    would add to every `cadbench list`'s start)."""
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    return "\n".join(" ".join(text.ljust(width) if column < 2 else text.rjust(width)
                              for column, (text, width) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)
