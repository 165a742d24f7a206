"""The ``mamba-qpass`` command line."""

import argparse
import dataclasses
import json
import sys
import time

from pathlib import Path

import torch

from mamba_qpass import data
from mamba_qpass.loading import SAVED_MODEL_METADATA
from mamba_qpass.modes import MODES, resolve_modes


# The quantize command reports every mode's logits against this one's.
FLOAT_REFERENCE = "fp"
EVAL_MODES = ["fp", "w8a8", "fp32_ssm", "float_sim"]
GENERATE_MODE = "w8a8"
GENERATE_CALIB_SAMPLES = 64


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# quantize, the first command a user runs, calibrates on fewer sequences than QuantConfig's 512 (and
# scores 8192 validation tokens) so that a 2-core CPU, where everything runs through the PyTorch
# references, gets through it in minutes; its output says what it used. eval and compare keep 512, the
# recipe their published figures used.
QUICK_CALIB_SAMPLES = 64


def _add_common(parser: argparse.ArgumentParser, calib_samples: int = 512) -> None:
    parser.add_argument(
        "--model", default=None,
        help="local folder or hub id (default: the embedded checkpoint); for eval, generate and compare also a "
             "folder qpass.save wrote (eval, generate: a saved model; compare: a saved calibration)",
    )
    parser.add_argument("--data-dir", default=None, help="the shared data folder (default: $MAMBA_QPASS_DATA or ../shared/data)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--calib-samples", type=_positive_int, default=calib_samples, help=f"calibration sequences (default {calib_samples})"
    )
    parser.add_argument("--calib-len", type=_positive_int, default=512, help="tokens per calibration sequence (default 512)")
    parser.add_argument("--output", default=None, help="write the results as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    try:
        resolve_modes(modes)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return modes


def _mode(text: str) -> str:
    (mode,) = _modes(text)
    return mode


def _need_calibration(modes: list[str]) -> bool:
    return any(MODES[mode].needs_calibration for mode in modes)


def _tasks(text: str) -> tuple[str, ...]:
    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    if not tasks:
        raise argparse.ArgumentTypeError("name at least one task, e.g. lambada_openai")
    return tasks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mamba-qpass",
        description="Quantise a Mamba language model by rewriting its graph: calibrate it once, build its "
                    "precision modes (w8a8, fp32_ssm, float_sim, ...), and report, compare or evaluate them. "
                    "Without --model, the embedded default checkpoint is used.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    quantize = sub.add_parser(
        "quantize",
        help="calibrate a model once, apply precision modes, report perplexity and logit error vs fp",
    )
    _add_common(quantize, calib_samples=QUICK_CALIB_SAMPLES)
    quantize.add_argument("--modes", type=_modes, default=["w8a8"], help="comma-separated (default: w8a8)")
    quantize.add_argument(
        "--eval-tokens", type=int, default=8192,
        help="validation tokens for perplexity (default 8192; the table's tokens column counts those scored)",
    )
    quantize.add_argument("--context-len", type=_positive_int, default=512, help="perplexity window (default 512)")
    quantize.add_argument("--stride", type=_positive_int, default=256, help="perplexity window stride (default 256)")
    quantize.add_argument(
        "--save", default=None, metavar="DIR",
        help="write the quantised model of the one mode in --modes, with its tokenizer, to DIR "
             "(qpass.load(DIR) runs it without the float model)",
    )
    compare = sub.add_parser(
        "compare",
        help="run modes on identical token batches and report per-layer, per-tensor differences",
    )
    _add_common(compare)
    compare.add_argument(
        "--modes", type=_modes, default=["fp", "w8a8", "fp32_ssm", "float_sim", "fp32_conv"], help="comma-separated"
    )
    compare.add_argument(
        "--reference", type=_mode, default="w8a8", help="the mode every other one is compared with"
    )
    compare.add_argument("--text-file", default=None, help="compare on this text instead of LAMBADA passages")
    compare.add_argument("--passages", type=int, default=64, help="LAMBADA passages used (default 64, the first ones)")
    compare.add_argument("--seq-len", type=int, default=128, help="tokens per compared sequence")
    compare.add_argument("--batch-size", type=_positive_int, default=4, help="sequences per forward (default 4)")
    evaluate = sub.add_parser(
        "eval",
        help="calibrate once, evaluate every mode on the same task documents (lm-eval) and Gutenberg text",
    )
    _add_common(evaluate)
    evaluate.add_argument(
        "--modes", type=_modes, default=None,
        help=f"comma-separated (default: {','.join(EVAL_MODES)}; with a saved model, its one mode)",
    )
    evaluate.add_argument(
        "--tasks", type=_tasks, default=("lambada_openai",),
        help="comma-separated lm-eval task names: shipped (lambada_openai, offline from --data-dir), in "
        "--include-path, or lm-eval's own (their datasets need the hub)",
    )
    evaluate.add_argument(
        "--include-path", default=None, help="a folder of your own lm-eval task YAMLs (as lm-eval's --include_path)"
    )
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N documents of each task")
    evaluate.add_argument("--batch-size", type=_positive_int, default=32, help="documents per forward (default 32)")
    evaluate.add_argument(
        "--reference", type=_mode, default="w8a8",
        help="per-document agreement is measured against this mode (when among --modes)",
    )
    evaluate.add_argument(
        "--ppl-tokens", type=int, default=32768, help="Gutenberg validation tokens for perplexity (0: skip)"
    )
    evaluate.add_argument(
        "--compile", action="store_true",
        help="run each mode through inductor with its rounding kept (same results; float_sim several times faster "
             "on a GPU after a compile of about a minute at 2.8b)",
    )
    evaluate.add_argument("--context-len", type=int, default=512, help="perplexity window")
    evaluate.add_argument("--stride", type=int, default=256, help="perplexity window stride")
    generate = sub.add_parser(
        "generate",
        help="continue a prompt with a quantised model, streaming the text, and report tokens per second",
    )
    # a smaller calibration than quantize's by default: on a CPU 512 sequences take minutes before a token appears
    _add_common(generate, calib_samples=GENERATE_CALIB_SAMPLES)
    generate.add_argument("--prompt", required=True, help="the text to continue")
    generate.add_argument(
        "--mode", type=_mode, default=None, help="the precision mode (default: w8a8; with a saved model, its own mode)"
    )
    generate.add_argument("--max-new-tokens", type=_positive_int, default=64, help="tokens to generate at most (default 64)")
    generate.add_argument("--do-sample", action="store_true", help="sample the next token instead of taking the most likely")
    generate.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    generate.add_argument("--top-k", type=_positive_int, default=50, help="sample among the k most likely tokens (default 50)")
    generate.add_argument("--top-p", type=float, default=1.0, help="sample among the most likely tokens holding this probability (default 1.0: all)")
    generate.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (default 0)")
    return parser


def _device(args) -> torch.device:
    return torch.device(args.device) if args.device else data.default_device()


def _load(args):
    """(model, tokenizer, the model's name or folder)."""
    from mamba_qpass.loading import load_pretrained

    name = args.model or data.default_model()
    return (*load_pretrained(name, device=_device(args)), name)


def _calibration_texts(args) -> list[str]:
    path = data.data_file(data.CALIBRATION_FILE, args.data_dir)
    return list(data.gutenberg_texts(path, max_chars=args.calib_samples * args.calib_len * 8))


def _calibration_before_load(args, modes) -> list[str] | None:
    """The calibration texts ``modes`` need (None if none does), read before the float model loads so
    that bad data fails fast; a wrong --model is still named first."""
    from mamba_qpass.loading import check_model_source

    check_model_source(args.model or data.default_model())
    return _calibration_texts(args) if _need_calibration(modes) else None


def _validation_tokens(args, tokenizer, num_tokens: int) -> torch.Tensor:
    path = data.data_file(data.VALIDATION_FILE, args.data_dir)
    text = "".join(data.gutenberg_texts(path, max_chars=num_tokens * 8))
    return torch.tensor(tokenizer(text)["input_ids"][:num_tokens])


def run_quantize(args) -> dict:
    import mamba_qpass as qpass
    from mamba_qpass.hf import QuantizedMambaForCausalLM
    from mamba_qpass.eval.perplexity import perplexity
    from mamba_qpass.saturation import warn_on_saturation

    to_save = [mode for mode in args.modes if mode != FLOAT_REFERENCE]
    if args.save and len(to_save) != 1:
        raise ValueError(f"--save writes one model: give exactly one quantised mode in --modes (e.g. --modes w8a8), "
                         f"got {','.join(args.modes)}")
    modes = list(dict.fromkeys([FLOAT_REFERENCE, *args.modes]))
    calibration = _calibration_before_load(args, modes)
    model, tokenizer, name = _load(args)
    config = qpass.QuantConfig(num_samples=args.calib_samples, seq_len=args.calib_len)
    progress = not args.quiet
    graphs = qpass.build_modes(model, modes, calibration, tokenizer, config, progress)
    tokens = _validation_tokens(args, tokenizer, args.eval_tokens)
    probe = tokens[: args.context_len][None].to(model.device)
    results = {"model": name, "device": str(model.device), "modes": {}}
    for mode, graph in graphs:
        qmodel = QuantizedMambaForCausalLM(graph, model.config, mode)
        ppl = perplexity(qmodel, tokens, args.context_len, args.stride, progress=progress, desc=f"perplexity {mode}")
        logits = qmodel(probe).logits.float()
        if mode == FLOAT_REFERENCE:
            fp_logits = logits
        else:
            warn_on_saturation(qpass.saturation(graph, probe), f"{mode} on the first {probe.shape[1]} validation tokens")
            results.setdefault("calibration", dataclasses.asdict(graph.meta["calibration"]))
        error = (logits - fp_logits).pow(2).sum()
        results["modes"][mode] = {
            **ppl,
            "logits_sqnr_db": float("inf") if error == 0 else (10 * torch.log10(fp_logits.pow(2).sum() / error)).item(),
            "top1_agreement_vs_fp": int((logits.argmax(-1) == fp_logits.argmax(-1)).sum()) / logits.shape[:-1].numel(),
        }
        if args.save and mode == to_save[0]:
            results["saved"] = str(qpass.save(qmodel, args.save, tokenizer))
    return results


def _comparison_batches(args, tokenizer, device) -> list[torch.Tensor]:
    if args.text_file:
        try:
            with open(args.text_file, encoding="utf-8") as f:
                texts = [f.read()]
        except UnicodeDecodeError as err:
            raise ValueError(f"--text-file {args.text_file} is not UTF-8 text ({err}): pass a text file") from err
    else:
        texts = data.lambada_texts(data.data_file(data.LAMBADA_FILE, args.data_dir))[: args.passages]
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    rows = torch.tensor(stream[: len(stream) // args.seq_len * args.seq_len]).view(-1, args.seq_len)
    if rows.numel() == 0:
        source = f"--text-file {args.text_file}" if args.text_file else "the comparison text"
        raise ValueError(f"{source} holds fewer than --seq-len {args.seq_len} tokens: pass a longer text or a smaller --seq-len")
    return [batch.to(device) for batch in rows.split(args.batch_size)]


def _compare_saved(folder: Path, args):
    """compare of a folder ``qpass.save`` wrote: every quantised mode is built from a saved calibration
    (``qpass.save(qpass.calibrate(...), DIR, tokenizer=...)``); a saved model of one mode is refused,
    since the other modes need what it no longer holds (the float weights and the calibrated ranges)."""
    import mamba_qpass as qpass
    from mamba_qpass.comparison import compare_graphs

    graph_or_model, tokenizer = _load_saved(folder, args)
    mode = getattr(graph_or_model, "mode", None)
    if mode is not None:
        raise ValueError(
            f"{folder} holds the {mode} model only: comparing modes needs them all built from one calibration. "
            "Pass the float model's folder (and calibration data), or save the calibration instead: "
            "qpass.save(qpass.calibrate(model, texts, tokenizer), DIR, tokenizer=tokenizer)"
        )
    modes = list(dict.fromkeys([*args.modes, args.reference]))
    uncalibrated = [m for m in modes if not MODES[m].needs_calibration]
    if uncalibrated:
        raise ValueError(
            f"{folder} holds a calibration, from which every quantised mode is built, but not {', '.join(uncalibrated)}, "
            f"which is built from the float model: drop it from --modes (e.g. --modes w8a8,fp32_ssm,float_sim), "
            "or pass the float model's folder"
        )
    graphs = {m: qpass.apply_mode(graph_or_model, m) for m in modes}
    return compare_graphs(graphs, _comparison_batches(args, tokenizer, _device(args)), args.reference, not args.quiet)


def run_compare(args):
    import mamba_qpass as qpass

    saved = _saved_model_folder(args)
    if saved is not None:
        return _compare_saved(saved, args)
    modes = list(dict.fromkeys([*args.modes, args.reference]))
    calibration = _calibration_before_load(args, modes)
    model, tokenizer, _ = _load(args)
    config = qpass.QuantConfig(num_samples=args.calib_samples, seq_len=args.calib_len)
    batches = _comparison_batches(args, tokenizer, model.device)
    return qpass.compare(model, modes, batches, calibration, tokenizer, config, args.reference, not args.quiet)


def _saved_model_folder(args) -> Path | None:
    """The folder of ``--model`` when ``qpass.save`` wrote it, else None."""
    if args.model is None:
        return None
    folder = Path(args.model).expanduser()
    return folder if (folder / SAVED_MODEL_METADATA).exists() else None


def _load_saved(folder: Path, args):
    """(quantised model or graph, tokenizer) of a folder ``qpass.save`` wrote, with its tokenizer."""
    import mamba_qpass as qpass
    from transformers import AutoTokenizer

    loaded = qpass.load(folder, device=_device(args))
    if isinstance(loaded, torch.fx.GraphModule) and loaded.meta.get("mode") is not None:
        from transformers import MambaConfig
        from mamba_qpass.hf import QuantizedMambaForCausalLM

        loaded = QuantizedMambaForCausalLM(loaded, MambaConfig.from_dict(loaded.meta["source"].config), loaded.meta["mode"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"{folder} holds no tokenizer: save the model with its tokenizer "
            "(qpass.save(model, dir, tokenizer=...) or mamba-qpass quantize --save)"
        ) from err
    return loaded, tokenizer


def run_eval(args) -> dict:
    import mamba_qpass as qpass
    from mamba_qpass.eval import EvalConfig, evaluate_modes, evaluate_saved

    config = EvalConfig(
        tasks=args.tasks, include_path=args.include_path, limit=args.limit, batch_size=args.batch_size,
        data_dir=args.data_dir, context_len=args.context_len, stride=args.stride, reference=args.reference,
        progress=not args.quiet, compile=args.compile,
    )

    def report_progress(mode: str, summary: dict) -> None:
        if args.quiet:
            return
        accs = [f"{task} acc {100 * m['acc']:.2f}%" for task, m in summary["tasks"].items() if m["acc"] is not None]
        text = summary["text_perplexity"]
        ppl = [f"text ppl {text['perplexity']:.3f}"] if text else []
        print(f"{mode} done in {summary['seconds']:.1f} s: {', '.join(accs + ppl)}", file=sys.stderr)

    saved = _saved_model_folder(args)
    if saved is not None:
        qmodel, tokenizer = _load_saved(saved, args)
        if isinstance(qmodel, torch.fx.GraphModule):
            raise ValueError(
                f"{saved} holds a calibration, not a model: evaluate a model built from it "
                "(qpass.apply_mode, then qpass.save), or compare its modes with mamba-qpass compare --model"
            )
        if args.modes not in (None, [qmodel.mode]):
            raise ValueError(
                f"{saved} holds the {qmodel.mode} model only; other modes need the float model and calibration: "
                f"drop --modes, or pass the float model's folder"
            )
        text_tokens = _validation_tokens(args, tokenizer, args.ppl_tokens) if args.ppl_tokens > 0 else None
        results = evaluate_saved(qmodel, tokenizer, config, text_tokens, report_progress)
        return {"model": str(saved), "device": str(qmodel.device), **results}

    modes = args.modes or EVAL_MODES
    calibration = _calibration_before_load(args, modes)
    model, tokenizer, name = _load(args)
    quant_config = qpass.QuantConfig(num_samples=args.calib_samples, seq_len=args.calib_len)
    text_tokens = _validation_tokens(args, tokenizer, args.ppl_tokens) if args.ppl_tokens > 0 else None
    results = evaluate_modes(model, tokenizer, modes, calibration, config, quant_config, text_tokens, report_progress)
    return {"model": name, "device": str(model.device), **results}


class _TimedTextStream:
    """transformers' TextStreamer printing the prompt and then each token as it comes, noting when the first
    and the last new token arrived."""

    def __init__(self, tokenizer):
        from transformers import TextStreamer

        self.text = TextStreamer(tokenizer)
        self.prompt_seen = False
        self.token_times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:  # generate puts the prompt first, then each new token
            self.token_times.append(time.perf_counter())
        self.prompt_seen = True
        self.text.put(value)

    def end(self) -> None:
        self.text.end()


def run_generate(args) -> dict:
    import mamba_qpass as qpass

    saved = _saved_model_folder(args)
    if saved is not None:
        qmodel, tokenizer = _load_saved(saved, args)
        if args.mode not in (None, qmodel.mode):
            raise ValueError(f"{saved} holds the {qmodel.mode} model only: drop --mode, or pass the float model's folder")
        name = str(saved)
    else:
        model, tokenizer, name = _load(args)
        mode = args.mode or GENERATE_MODE
        calibration = _calibration_texts(args) if _need_calibration([mode]) else None
        config = qpass.QuantConfig(num_samples=args.calib_samples, seq_len=args.calib_len)
        qmodel = qpass.apply(model, mode, calibration, tokenizer, config, progress=not args.quiet)
    input_ids = torch.tensor([tokenizer(args.prompt)["input_ids"]], device=qmodel.device)
    if input_ids.shape[1] == 0:
        raise ValueError("the prompt holds no tokens: give --prompt some text")
    generator = torch.Generator(device=qmodel.device).manual_seed(args.seed)
    stream = _TimedTextStream(tokenizer)
    start = time.perf_counter()
    out = qmodel.generate(
        input_ids, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, eos_token_id=tokenizer.eos_token_id, generator=generator, streamer=stream,
    )
    times = stream.token_times
    decode_seconds = times[-1] - times[0]
    return {
        "model": name, "mode": qmodel.mode, "device": str(qmodel.device), "prompt_tokens": input_ids.shape[1],
        "new_tokens": len(times), "tokens": out[0].tolist(), "text": tokenizer.decode(out[0]),
        "first_token_seconds": times[0] - start,
        "decode_tokens_per_second": (len(times) - 1) / decode_seconds if len(times) > 1 and decode_seconds > 0 else None,
        "tokens_per_second": len(times) / (times[-1] - start),
    }


def _generation_report(results: dict) -> str:
    decode = results["decode_tokens_per_second"]
    decode_text = f"; decoding {decode:.1f} tokens/s after the first" if decode is not None else ""
    return (
        f"{results['mode']} on {results['device']}: {results['new_tokens']} new tokens after a {results['prompt_tokens']}-token "
        f"prompt, {results['tokens_per_second']:.1f} tokens/s (first token after {1000 * results['first_token_seconds']:.0f} ms"
        f"{decode_text})"
    )


def _table(results: dict) -> str:
    lines = [
        f"model {results['model']} on {results['device']}",
        *([] if "calibration" not in results else [
            "calibrated on {sequences} sequences x {seq_len} tokens ({tokens} tokens; --calib-samples, --calib-len)"
            .format(**results["calibration"])
        ]),
        f"{'mode':<10} {'perplexity':>11} {'tokens':>8} {'SQNR dB':>8} {'top-1 vs fp':>12}",
    ]
    for mode, r in results["modes"].items():
        lines.append(
            f"{mode:<10} {r['perplexity']:>11.3f} {r['tokens']:>8d} {r['logits_sqnr_db']:>8.1f} "
            f"{100 * r['top1_agreement_vs_fp']:>11.2f}%"
        )
    if "saved" in results:
        lines.append(f"saved to {results['saved']} (load with qpass.load)")
    return "\n".join(lines)


def _eval_header(results: dict) -> str:
    config = results["config"]
    calibration = results["quant_config"]
    limit = f"first {config['limit']} documents" if config["limit"] else "all documents"
    lines = [f"model {results['model']} on {results['device']}; lm-eval, {limit}"]
    if calibration:
        lines.append(
            f"one calibration for every mode: {calibration['num_samples']} x {calibration['seq_len']} tokens "
            f"({results['calibration_seconds']:.1f} s)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compare":
            report = run_compare(args)
            text, payload = report.to_table(), report.to_json()
        elif args.command == "eval":
            from mamba_qpass.eval import format_table

            results = run_eval(args)
            text, payload = _eval_header(results) + "\n" + format_table(results), json.dumps(results, indent=2)
        elif args.command == "generate":
            results = run_generate(args)
            text, payload = _generation_report(results), json.dumps(results, indent=2)
        else:
            results = run_quantize(args)
            text, payload = _table(results), json.dumps(results, indent=2)
    except (OSError, ValueError, ImportError) as err:
        print(f"mamba-qpass: error: {err}", file=sys.stderr)
        return 2
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
