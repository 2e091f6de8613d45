"""A VLM's structure from its config alone: every Linear layer, its shape and its component.

    >>> s = load_structure("llava-1.5-7b")          # bundled preset, offline
    >>> s = load_structure("/path/to/model_folder")  # any folder with config.json
    >>> s = load_structure("llava-hf/llava-1.5-7b-hf")  # Hub id: fetches config.json only (online)
    >>> s.cost_per_rank("projector")
    13312

The model is instantiated on the `meta` device (no weights are allocated or downloaded), then each
`nn.Linear` is classified with `toolkit.calculator.architectures`. Building LLaVA-1.5-7B this way takes well under a
second (see bench/bench_calculator.py).
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from toolkit.calculator.architectures import (
    COMPONENTS,
    EXCLUDED,
    ComponentPatterns,
    dead_rule_for,
    heuristic_component,
    is_output_head,
    module_kind,
    require_components,
    spec_for,
)
from toolkit.errors import InputError, ModelLoadError, UnsupportedModelError

PRESET_DIR = Path(__file__).parent / "presets"


_IMPORT_LOCK = threading.Lock()


def warm_imports() -> None:
    """Import transformers' config and model auto classes once, under a lock (long-lived servers call this
    at start-up so no user action can interleave with transformers' lazy first import)."""
    with _IMPORT_LOCK:
        import transformers.models.auto.configuration_auto  # noqa: F401
        import transformers.models.auto.modeling_auto  # noqa: F401
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText  # noqa: F401


def presets() -> dict[str, dict]:
    """Bundled presets: name -> {"file", "hub_id", "description"} (configs only, no weights)."""
    return json.loads((PRESET_DIR / "index.json").read_text())


@dataclass(frozen=True)
class LinearModule:
    """One `nn.Linear` of the model and where it belongs."""

    name: str
    in_features: int
    out_features: int
    component: str
    """vision | projector | language | excluded"""
    kind: str
    """attention | mlp"""
    excluded_reason: str = ""
    """why an excluded module is left out (output head, dead module, not in any component)"""
    bias: bool = False
    """the layer has a bias vector (full fine-tuning trains it too)"""

    @cached_property  # the solver reads these thousands of times per solve
    def cost_per_rank(self) -> int:
        """LoRA parameters per unit of rank: A is r x in, B is out x r."""
        return self.in_features + self.out_features

    @cached_property
    def max_rank(self) -> int:
        """The highest useful rank: min(in, out), and no rank whose LoRA costs more than full fine-tuning.

        Ranks above min(in, out) add parameters but not expressiveness; a rank with r x (in + out) above
        in x out + bias costs more than training the layer itself (then `modules_to_save` is the better arm).
        """
        return max(1, min(self.in_features, self.out_features, self.full_params // self.cost_per_rank))

    @cached_property
    def full_params(self) -> int:
        """Parameters of the layer itself, weight and bias (what full fine-tuning of it costs)."""
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class ModelStructure:
    """The Linear layers of a VLM, classified into vision / projector / language / excluded."""

    model_id: str
    """what the user asked for: preset name, local folder or Hub id"""
    source: str
    """preset | local | hub"""
    model_type: str
    architecture: str
    """the transformers class that was instantiated on the meta device"""
    family: str
    """registry family, or 'heuristic' / 'custom patterns'"""
    modules: tuple[LinearModule, ...]
    component_params: dict[str, int]
    """all parameters (not only Linear weights) under each component"""
    total_params: int
    hub_id: str | None = None
    """the Hub repository the config comes from, when known (presets record theirs)"""
    revision: str | None = None
    config: object = field(default=None, compare=False, repr=False)
    """the transformers config the structure was built from"""

    def linears(self, component: str, kind: str = "all") -> list[LinearModule]:
        """Live Linear layers of a component, optionally only attention or only MLP layers."""
        return [m for m in self.modules if m.component == component and (kind == "all" or m.kind == kind)]

    def cost_per_rank(self, component: str, kind: str = "all") -> int:
        return sum(m.cost_per_rank for m in self.linears(component, kind))

    @cached_property
    def excluded(self) -> list[LinearModule]:
        return [m for m in self.modules if m.component == EXCLUDED]

    @cached_property
    def dead(self) -> list[LinearModule]:
        return [m for m in self.excluded if m.excluded_reason.startswith("dead")]

    def kinds_available(self, component: str) -> list[str]:
        return ["all"] + sorted({m.kind for m in self.linears(component)})


MAX_LAYERS = 1024
"""most layers one (sub-)config may declare: beyond any real model; building 10^5 layers took minutes"""


def _check_sizes(data: dict, where: str, path: str = "") -> None:
    """Refuse absurd layer counts before anything is built (bounded work on pathological configs)."""
    for key, value in data.items():
        if isinstance(value, dict):
            _check_sizes(value, where, f"{path}{key}.")
        elif "layers" in key and isinstance(value, int) and not isinstance(value, bool) and value > MAX_LAYERS:
            raise ModelLoadError(f"model: {path}{key} = {value} in {where} (allowed: at most {MAX_LAYERS} layers)")


def _config_from_dict(data: dict, where: str):
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    model_type = data.get("model_type")
    if not model_type or not isinstance(model_type, str):
        raise ModelLoadError(f"model: {where} has no 'model_type' text field, so its architecture is unknown")
    _check_sizes(data, where)
    rest = {k: v for k, v in data.items() if k != "model_type"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoConfig.for_model(model_type, **rest)
    except ValueError as exc:
        if "Unrecognized model" in str(exc) or model_type in str(exc):
            import transformers

            raise UnsupportedModelError(
                f"model: model_type '{model_type}' in {where} is not known to transformers {transformers.__version__}"
            ) from None
        raise ModelLoadError(f"model: {where} is not a valid {model_type} config ({exc})") from None
    except (TypeError, AttributeError, KeyError, StrictDataclassError) as exc:  # e.g. text_config not an object
        first = str(exc).strip().splitlines()
        raise ModelLoadError(f"model: {where} is not a valid {model_type} config "
                             f"({' '.join(first[:2]) if first else type(exc).__name__})") from None


def _read_json(path: Path, label: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"model: {label} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except OSError as exc:
        raise ModelLoadError(f"model: cannot read {label} ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"model: {label} must hold a JSON object, found {type(data).__name__}")
    return data


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the Hub endpoint, so an offline machine fails in seconds, not after retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def _fetch_hub_config(repo_id: str, revision: str | None) -> dict:
    """config.json of a Hub repo (from the local HF cache when offline and cached)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    same = [name for name, p in presets().items() if p.get("hub_id") == repo_id]
    offline = (
        f"model: cannot fetch config.json of '{repo_id}': the Hugging Face Hub is unreachable (offline) and it is "
        f"not in the local cache; " + (f"the preset '{same[0]}' is this model's config: use it instead (or a local folder "
                                        "with config.json)"
                                        if same else f"use a preset ({', '.join(presets())}) or a local folder "
                                        "with config.json")
    )
    online = _hub_reachable()
    try:
        path = hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=not online)
    except LocalEntryNotFoundError:
        raise ModelLoadError(offline) from None
    except GatedRepoError:
        raise ModelLoadError(f"model: '{repo_id}' is gated on the Hub: accept its licence and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"model: '{repo_id}' was not found on the Hub (private repos need HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"model: revision '{revision}' of '{repo_id}' was not found on the Hub") from None
    except EntryNotFoundError:
        raise ModelLoadError(f"model: '{repo_id}' on the Hub has no config.json") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelLoadError(f"model: cannot fetch config.json of '{repo_id}' from the Hub ({type(exc).__name__})") from None
    return _read_json(Path(path), f"config.json of '{repo_id}'")


def resolve_config(model: str, revision: str | None = None) -> tuple[dict, str, str | None]:
    """Find a model's config dict: preset name, local folder/config.json, or Hub id.

    Returns (config dict, source, hub id or None).
    """
    if not isinstance(model, str) or not model.strip():
        raise InputError("model: give a preset name, a local folder with config.json, or a Hub id like org/name")
    model = model.strip()
    if len(model) > 1024:  # longer than any path or Hub id: the OS would refuse it with an exception
        raise InputError(f"model: a name of {len(model)} characters (allowed: a preset, a folder or a Hub id, "
                         "at most 1024 characters)")
    table = presets()
    if model in table:
        entry = table[model]
        return _read_json(PRESET_DIR / entry["file"], f"preset '{model}'"), "preset", entry.get("hub_id")
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")):
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ModelLoadError(f"model: no config.json in '{model}' (a local model folder needs one)")
        return _read_json(path, f"'{path}'"), "local", None
    if _HUB_ID.match(model) and ".." not in model and "--" not in model:
        return _fetch_hub_config(model, revision), "hub", model
    raise InputError(
        f"model: '{model}' is not a preset ({', '.join(table)}), an existing local folder, or a Hub id like org/name"
    )


def instantiate_on_meta(config):
    import torch
    import transformers

    errors = []
    for auto in ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel"):
        cls = getattr(transformers, auto, None)
        if cls is None:
            continue
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cls.from_config(config)
        except ValueError as exc:  # this Auto class does not know the config type
            errors.append(str(exc).splitlines()[0])
    raise UnsupportedModelError(
        f"model: transformers {transformers.__version__} has no model class for model_type "
        f"'{config.model_type}' ({errors[-1] if errors else 'no Auto class'})"
    )


def load_structure(
    model: str, *, patterns: ComponentPatterns | None = None, revision: str | None = None
) -> ModelStructure:
    """Read a VLM's config (never its weights) and classify every Linear layer.

    Args:
        model: a preset name (see `presets()`), a local folder containing config.json, or a Hub id.
        patterns: explicit component patterns; overrides the registry and the heuristics.
        revision: Hub revision (branch, tag or commit) when `model` is a Hub id.

    >>> load_structure("llava-1.5-7b").cost_per_rank("vision")   # last vision layer is dead: excluded
    423936
    """
    data, source, hub_id = resolve_config(model, revision)
    config = _config_from_dict(data, f"the config of '{model}'")
    net = instantiate_on_meta(config)
    spec = spec_for(config.model_type)
    if patterns is not None:
        family, classify = "custom patterns", patterns.component_of
    elif spec is not None:
        family, classify = spec.family, spec.patterns.component_of
    else:
        family, classify = "heuristic", heuristic_component

    import torch

    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
    # Dead modules are a fact of the architecture, so custom patterns keep the rule too.
    rule = dead_rule_for(config)
    dead = rule(config, [n for n, _ in linears]) if rule else {}
    modules = []
    for name, mod in linears:
        comp = classify(name)
        reason = ""
        if is_output_head(name):
            comp, reason = EXCLUDED, "output head (lm_head): tied to the vocabulary, not a LoRA target here"
        elif name in dead:
            comp, reason = EXCLUDED, f"dead: {dead[name]}"
        elif comp == EXCLUDED:
            reason = "not part of the vision encoder, projector or language decoder"
        modules.append(LinearModule(name, mod.in_features, mod.out_features, comp, module_kind(name), reason,
                                    bias=mod.bias is not None))

    counts = {c: sum(1 for m in modules if m.component == c) for c in COMPONENTS}
    require_components(model, counts, f"family '{family}'")

    component_params = dict.fromkeys(COMPONENTS, 0)
    total = 0
    for pname, param in net.named_parameters():
        total += param.numel()
        comp = classify(pname.rsplit(".", 1)[0])
        if comp in component_params:
            component_params[comp] += param.numel()
    return ModelStructure(
        model_id=model,
        source=source,
        model_type=config.model_type,
        architecture=type(net).__name__,
        family=family,
        modules=tuple(modules),
        component_params=component_params,
        total_params=total,
        hub_id=hub_id,
        revision=revision,
        config=config,
    )
