"""The one rule for tensor names, shared by the IR, the container and every target.

A tensor name (``layers.0.weight``) ends up in three places that each read it differently: torch.fx
writes ``self.<part>`` into the Python source of ``forward`` (and Python NFKC-normalises identifiers, so
``ﬁ`` runs as ``fi``), ``nn.Module`` resolves each part as an attribute (``forward`` or ``_parameters``
is not a submodule), and the C and HLS targets turn the name into one identifier (``a-b.weight`` and
``a_b.weight`` both became ``t_a_b_weight``). A name that reads differently in any of them gives a
silently different model, so names are checked once against this rule, which admits only names that
mean the same thing everywhere:

* 1..:data:`MAX_NAME` characters in at most :data:`MAX_PARTS` dot-separated parts;
* each part an ASCII identifier (``[A-Za-z_][A-Za-z0-9_]*``) or a run of digits (``nn.Sequential``'s
  ``0``), not a Python keyword, not starting with ``__`` (dunders, and names Python would mangle);
* no part an attribute of ``nn.Module`` (:data:`MODULE_ATTRIBUTES`), and no first part an attribute
  of the ``fx.GraphModule`` the reader builds (:data:`ROOT_ATTRIBUTES`): these would shadow a method
  or replace the module's own state instead of naming a tensor;
* across a model, no name twice, no name that is a dotted prefix of another (``a`` cannot be a tensor
  and the module holding ``a.b``), and no two names with the same :func:`identifier` (the C and HLS
  targets' mapping).

A model built by ordinary attribute assignment passes (``nn.Module`` refuses its own attribute names
for submodules), except for non-ASCII attribute names, which are refused with the name; names given
through ``add_module`` (``"a-b"``, ``"class"``) and ``GraphModule``'s own names at the root (which fx
cannot run anyway) are refused the same way.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable

from sqc.errors import SqcError

MAX_NAME, MAX_PARTS = 1024, 64
_PART = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+)\Z")
_NOT_IDENT = re.compile(r"[^0-9A-Za-z_]")

MODULE_ATTRIBUTES = frozenset(
    """
    T_destination _apply _backward_hooks _backward_pre_hooks _buffers _call_impl _compiled_call_impl
    _forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs _forward_pre_hooks
    _forward_pre_hooks_with_kwargs _get_backward_hooks _get_backward_pre_hooks _get_name
    _is_full_backward_hook _load_from_state_dict _load_state_dict_post_hooks _load_state_dict_pre_hooks
    _maybe_warn_non_full_backward_hook _modules _named_members _non_persistent_buffers_set _parameters
    _register_load_state_dict_pre_hook _register_state_dict_hook _replicate_for_data_parallel
    _save_to_state_dict _slow_forward _state_dict_hooks _state_dict_pre_hooks _version
    _wrapped_call_impl add_module apply bfloat16 buffers call_super_init children compile cpu cuda
    double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
    get_submodule half ipu load_state_dict modules mtia named_buffers named_children named_modules
    named_parameters parameters register_backward_hook register_buffer register_forward_hook
    register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook
    register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module
    register_parameter register_state_dict_post_hook register_state_dict_pre_hook requires_grad_
    set_extra_state set_submodule share_memory state_dict to to_empty train training type xpu zero_grad
    """.split()
)
"""Attributes of ``nn.Module`` (class and instance, torch 2.13, dunders aside): no part may be one.
A fixed list, so that whether a file is valid does not depend on the installed torch; a test checks
that it still covers torch's."""

ROOT_ATTRIBUTES = frozenset(
    """
    _boxed_call _code _create_node_hooks _deepcopy_hooks _deepcopy_init _erase_node_hooks _graph
    _lineno_map _prologue_start _recompile_submodules _register_create_node_hook _register_deepcopy_hook
    _register_erase_node_hook _register_replace_node_hook _replace_hooks _set_replace_hook _tracer_cls
    _tracer_extras _unregister_create_node_hook _unregister_deepcopy_hook _unregister_erase_node_hook
    _unregister_replace_node_hook add_submodule code delete_all_unused_submodules delete_submodule graph
    meta print_readable recompile shape_env to_folder
    """.split()
)
"""What ``fx.GraphModule`` adds to ``nn.Module``: the first part names an attribute of the GraphModule
itself (deeper parts live on plain modules, where ``graph`` or ``code`` is an ordinary name)."""


def part_problem(part: str, first: bool) -> str | None:
    """Why one dot-separated part cannot be used, or None."""
    if not part:
        return "an empty part"
    if not _PART.match(part):
        return f"part {part!r} is not an ASCII identifier or a number"
    if keyword.iskeyword(part):
        return f"part {part!r} is a Python keyword"
    if part.startswith("__"):
        return f"part {part!r} starts with '__'"
    if part in MODULE_ATTRIBUTES:
        return f"part {part!r} is an attribute of torch's nn.Module"
    if first and part in ROOT_ATTRIBUTES:
        return f"part {part!r} is an attribute of torch's fx.GraphModule"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a tensor name on its own, or None."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        return f"a length outside 1..{MAX_NAME}"
    parts = name.split(".")
    if len(parts) > MAX_PARTS:
        return f"more than {MAX_PARTS} parts"
    for i, part in enumerate(parts):
        problem = part_problem(part, i == 0)
        if problem:
            return problem
    return None


def identifier(name: str) -> str:
    """The C/HLS identifier stem of a name: every character outside ``[0-9A-Za-z_]`` becomes ``_``.
    The C target prefixes it (``t_fc1_weight``); the HLS target uses it for node names. Not injective
    (``a.b_c`` and ``a_b.c`` meet), which is why :func:`names_problem` refuses such pairs."""
    return _NOT_IDENT.sub("_", name)


def names_problem(names: Iterable[str]) -> tuple[str, str] | None:
    """The first name that breaks the rule, alone or against the others, with the reason; or None."""
    seen: dict[str, str] = {}  # identifier -> name
    exact: dict[str, None] = {}  # in order, so that the same names always give the same message
    for name in names:
        problem = name_problem(name)
        if problem:
            return name, problem
        if name in exact:
            return name, "it is used twice"
        exact[name] = None
        other = seen.setdefault(identifier(name), name)
        if other != name:
            return name, f"it becomes the identifier {identifier(name)!r}, as {other!r} does"
    for name in exact:
        parts = name.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in exact:
                return prefix, f"it is a tensor and also holds {name!r}"
    return None


def check_names(names: Iterable[str], where: str = "") -> None:
    """Raise :class:`~sqc.errors.SqcError` (one line, naming the tensor) unless every name passes."""
    found = names_problem(names)
    if found is not None:
        name, problem = found
        raise SqcError(f"{where}tensor name {shown_name(name)}: {problem}")


def shown_name(name: str) -> str:
    """A name for an error message: quoted, control and non-ASCII characters escaped, at most 80
    characters (a rejected name may be anything a file holds)."""
    text = ascii(name)
    return text if len(text) <= 80 else text[:77] + "..."
