"""``inbedder encode``: embed every text of a table under an instruction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from inbedder import models
from inbedder.cli.common import (
    DeviceOption,
    DtypeOption,
    GenericOption,
    GuidedMethodOption,
    GuidedOption,
    ModelOption,
    SampleOption,
    check_dtype,
    check_readout,
    checked_store,
    given,
    guided_options,
    interruptible,
    on_terminal,
)
from inbedder.cli.declared import build, takes_fields
from inbedder.errors import InputError, as_input_error
from inbedder.interface import Embedder
from inbedder.options import EncodeOptions


@takes_fields(EncodeOptions, "encoding", panel="Encoding")
def encode(
    input: Annotated[Path, typer.Argument(help="CSV, TSV, JSONL, Parquet, or .txt with one text per line.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npy (array) or .parquet (columns + embedding).")],
    instruction: Annotated[
        str | None, typer.Option("--instruction", "-i", help="One question asked of every text.")
    ] = None,
    instruction_column: Annotated[str | None, typer.Option(help="Column holding one instruction per text.")] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Column holding the texts (default: 'text' or the only column).")
    ] = None,
    model: ModelOption = models.DEFAULT_MODEL,
    max_length: Annotated[
        int | None,
        typer.Option(help="Longest prompt in tokens (default 512); the input is cut, never the instruction."),
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    engine: Annotated[
        str, typer.Option(help="'local' (this process) or 'ray' (a pool of actors; --out is then a folder of shards).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="With --engine ray: the cluster ('auto': this node's; default: start one).")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="With --engine ray: actors, each holding one model.")] = 1,
    id_column: Annotated[
        str | None, typer.Option(help="With --engine ray: the column of row ids that errors name rows by.")
    ] = None,
    guided: GuidedOption = False,
    sample: SampleOption = None,
    generic: GenericOption = None,
    guided_method: GuidedMethodOption = None,
    save_map: Annotated[Path | None, typer.Option(help="With --guided: save the fitted map in this folder.")] = None,
    guided_map: Annotated[
        Path | None, typer.Option(help="Apply a map saved by --save-map: no language model runs.")
    ] = None,
    encoding: dict[str, Any] | None = None,
) -> None:
    """Embed every text of INPUT under an instruction and write the embeddings."""
    from inbedder import tables

    if instruction is not None and instruction_column is not None:
        raise InputError("give --instruction or --instruction-column, not both")
    check_dtype(dtype)  # both engines: refused before any work
    encoding = dict(encoding or {})
    cache, progress = encoding.pop("cache"), encoding.pop("show_progress_bar")
    options = build(EncodeOptions, encoding, show_progress_bar=on_terminal(progress))
    check_readout(options.readout)
    fit = guided_options(guided, sample, generic, guided_method)
    _check_guided(fit, save_map, guided_map, options.truncate_dim is not None, options.return_generations, engine)
    if fit is not None and instruction_column is not None:
        raise InputError("--guided learns one map for one question; give --instruction, not --instruction-column")
    model_options = {"device": device, **given(dtype=dtype, max_length=max_length)}
    if engine == "ray":
        if instruction is None:
            raise InputError("--engine ray needs --instruction (one question for every text)")
        if concurrency < 1:
            raise InputError(f"--concurrency must be at least 1, got {concurrency}")
        if not input.exists():
            raise InputError(f"no such file or folder: {input}")
        tables.check_output_folder(out, overwrite, inputs=[input])
        ray_options = replace(options, cache=True if cache else None)
        _encode_on_ray(
            input,
            out,
            instruction,
            text_column,
            model,
            ray_options,
            model_options,
            address,
            concurrency,
            id_column,
            (fit, generic) if fit is not None else None,
        )
        return
    inputs = [input, *([guided_map] if guided_map is not None else [])]
    out = tables.check_output(out, overwrite, inputs)
    kind = out.suffix.lower()
    return_generations = options.return_generations
    answers_out = out.with_suffix(".answers.txt") if return_generations and kind == ".npy" else None
    if answers_out is not None:
        tables.check_side_file(answers_out, overwrite, inputs)
    if save_map is not None:
        tables.check_output_folder(save_map, overwrite, [*inputs, out])
    table = tables.read_table(input)
    texts = tables.column_texts(table, tables.pick_column(table, text_column, input), input)
    if instruction_column is not None:
        instruction = tables.column_texts(
            table, tables.pick_column(table, instruction_column, input, "instruction"), input
        )
    clashes = {"embedding", *(["answer"] if return_generations else [])} & set(map(str, table.columns))
    if clashes and kind == ".parquet":
        raise InputError(f"{input} already has column(s) {sorted(clashes)}, which the output would add")

    store = checked_store(True) if cache else None
    options = replace(options, cache=store if store is not None else False)

    kept = (
        f"every finished batch is kept in the cache {store.path}; run the same command again to go on from there"
        if store is not None
        else f"nothing was written to {out}; with --cache an interrupted run keeps its finished batches"
    )
    embedder = _embedder(model, model_options, instruction, options, fit, generic, guided_map)
    with interruptible(kept):
        result = embedder.encode_multi(texts, [instruction], options)[0]
    if save_map is not None:
        (fitted,) = embedder.maps.values()
        fitted.save(save_map)
        typer.echo(f"saved the guided map to {save_map}", err=True)
    embeddings, answers = result if return_generations else (result, None)
    _write(out, embeddings, table, answers, answers_out)
    kind = "guided embeddings" if guided_map is not None else "embeddings"
    typer.echo(f"wrote {embeddings.shape[0]} {kind} of size {embeddings.shape[1]} to {out}", err=True)


def _check_guided(
    fit: object, save_map: Path | None, guided_map: Path | None, truncating: bool, answering: bool, engine: str
) -> None:
    """Refuse the guided flags that contradict each other or the rest of the command."""
    saved, fitted = guided_map is not None, fit is not None
    refusals = [
        (save_map is not None and not fitted, "--save-map saves the map --guided fits; add --guided"),
        (saved and fitted, "--guided fits a new map and --guided-map applies a saved one; give one of them"),
        (truncating and (saved or fitted), "--truncate-dim applies to the model's own readouts, not to guided ones"),
        (saved and answering, "--guided-map runs no language model, so there are no answers to return"),
        (saved and engine != "local", "--guided-map applies a saved map in this process; on Ray, fit with --guided"),
        (save_map is not None and engine != "local", "--save-map saves a local run's map; on Ray it is not kept"),
    ]
    for refused, message in refusals:
        if refused:
            raise InputError(message)


def _embedder(
    model: str,
    model_options: dict,
    instruction: object,
    options: EncodeOptions,
    fit: object,
    generic: str | None,
    guided_map: Path | None,
) -> Embedder:
    """The embedder the command runs: saved guided maps, a guided embedder that fits one, or the model."""
    from inbedder.guided import GuidedEmbedder  # heavy imports once the inputs are good

    if guided_map is not None:
        return GuidedEmbedder.from_maps(guided_map, cache=options.cache)
    if fit is not None:
        if instruction is None:
            raise InputError("--guided needs --instruction or --instruction-column: the map is learned per question")
        # the generic embedder loads (or is refused) before the language model
        return GuidedEmbedder(model, generic, fit, cache=options.cache, model_options=model_options)
    from inbedder.embedder import InBedder
    from inbedder.validation import check_instructions_fit

    asked = instruction if isinstance(instruction, list) else [instruction]
    check_instructions_fit(model, asked, template=options.template, max_length=model_options.get("max_length"))
    return InBedder(model, **model_options)


def _write(out: Path, embeddings: np.ndarray, table: object, answers: list | None, answers_out: Path | None) -> None:
    """The embeddings (and answers) into ``out``; with an .npy output, the answers beside it, a line each."""
    from inbedder import tables

    if answers is not None:
        answers = ["" if a is None else a for a in answers]  # guided: only the sampled texts were answered
    tables.write_embeddings(out, embeddings, table, answers)
    if answers is not None and answers_out is not None:
        # one line per text; with --num-samples, its answers separated by tabs
        flat = [a if isinstance(a, str) else "\t".join(a) for a in answers]
        lines = "".join(a.replace("\n", " ") + "\n" for a in flat)
        tables.atomic_write(answers_out, lambda p: p.write_text(lines, encoding="utf-8"))
        typer.echo(f"wrote answers to {answers_out}", err=True)


def _encode_on_ray(
    input: Path,
    out: Path,
    instruction: str,
    text_column: str | None,
    model: str,
    options: EncodeOptions,
    model_options: dict,
    address: str | None,
    concurrency: int,
    id_column: str | None,
    guided: tuple[object, str | None] | None = None,
) -> None:
    """``--engine ray``: Parquet shards in the folder ``out``, the input's columns plus ``embedding``;
    every option of the command applies on the actors, or is refused before they start. With
    ``guided`` (options, generic embedder), the map is fitted on a sample and applied on the actors."""
    from inbedder import distributed, tables

    distributed.init(address)
    where = {"text_column": text_column or "text", "id_column": id_column, "concurrency": concurrency}
    try:
        if guided is not None:
            fit, generic = guided
            embedded = distributed.guided_dataset(
                input, instruction, fit, options, model=model, model_options=model_options, generic=generic, **where
            )
        else:
            embedded = distributed.embed_dataset(
                input, instruction, options, model=model, model_options=model_options, **where
            )
    except ValueError as err:  # refused before the actors start: an option they could not honour, a column
        raise as_input_error(err) from err
    about = {"command": "encode", "input": str(input), "instruction": instruction, "model": model}
    try:
        tables.atomic_folder(out, lambda folder: embedded.write_parquet(str(folder)), about)
    except Exception as err:
        refused = distributed.user_error(err)
        if refused is None:
            raise
        raise InputError(f"{input}: {refused}") from None
    typer.echo(f"wrote Parquet shards to {out}", err=True)
