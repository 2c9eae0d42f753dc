"""``inbedder encode``: embed every text of a table under an instruction."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from inbedder import models
from inbedder.cli.common import (
    DeviceOption,
    DtypeOption,
    ModelOption,
    check_dtype,
    check_readout,
    checked_store,
    given,
    interruptible,
    on_terminal,
)
from inbedder.cli.declared import build, takes_fields
from inbedder.cli.flags import Guiding, Placement
from inbedder.errors import InputError, as_input_error
from inbedder.interface import Embedder
from inbedder.options import EncodeOptions


@takes_fields(Guiding, "guiding", panel="Guided embeddings")
@takes_fields(Placement, "placement", panel="Where it runs")
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
    id_column: Annotated[
        str | None, typer.Option(help="With --engine ray: the column of row ids that errors name rows by.")
    ] = None,
    model: ModelOption = models.DEFAULT_MODEL,
    max_length: Annotated[
        int | None,
        typer.Option(help="Longest prompt in tokens (default 512); the input is cut, never the instruction."),
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    save_map: Annotated[Path | None, typer.Option(help="With --guided: save the fitted map in this folder.")] = None,
    guided_map: Annotated[
        Path | None, typer.Option(help="Apply a map saved by --save-map: no language model runs.")
    ] = None,
    encoding: dict[str, Any] | None = None,
    placement: dict[str, Any] | None = None,
    guiding: dict[str, Any] | None = None,
) -> None:
    """Embed every text of INPUT under an instruction and write the embeddings."""
    if instruction is not None and instruction_column is not None:
        raise InputError("give --instruction or --instruction-column, not both")
    check_dtype(dtype)  # both engines: refused before any work
    encoding = dict(encoding or {})
    cache, progress = encoding.pop("cache"), encoding.pop("show_progress_bar")
    options = build(EncodeOptions, encoding, show_progress_bar=on_terminal(progress))
    check_readout(options.readout)
    where, guided = build(Placement, placement or {}), build(Guiding, guiding or {})
    fit = guided.options()
    _check_guided(fit, save_map, guided_map, options.truncate_dim is not None, options.return_generations, where.engine)
    if fit is not None and instruction_column is not None:
        raise InputError("--guided learns one map for one question; give --instruction, not --instruction-column")
    loading = {"device": device, **given(dtype=dtype, max_length=max_length)}
    asked = (instruction, text_column, model, loading, options, fit, guided.generic, id_column)
    job = _Job(input, out, overwrite, *asked)
    if where.engine == "ray":
        _encode_on_ray(job, replace(options, cache=True if cache else None), where)
    else:
        _encode_here(job, instruction_column, cache, save_map, guided_map)


@dataclass(frozen=True)
class _Job:
    """What ``encode`` was asked, checked: the input, the output, the question, the model, the options."""

    input: Path
    out: Path
    overwrite: bool
    instruction: Any
    text_column: str | None
    model: str
    model_options: dict[str, Any]
    options: EncodeOptions
    fit: Any
    generic: str | None
    id_column: str | None = None


def _encode_here(
    job: _Job, instruction_column: str | None, cache: bool, save_map: Path | None, guided_map: Path | None
) -> None:
    """This process: the table in, the embeddings (and answers, and a guided map) out."""
    from inbedder import tables

    inputs = [job.input, *([guided_map] if guided_map is not None else [])]
    inputs = [path for path in inputs if str(path) != tables.STDIO]
    piped = str(job.out) == tables.STDIO  # JSON lines on standard output
    out = job.out if piped else tables.check_output(job.out, job.overwrite, inputs)
    answering = job.options.return_generations
    answers_out = out.with_suffix(".answers.txt") if answering and out.suffix.lower() == ".npy" else None
    if answers_out is not None:
        tables.check_side_file(answers_out, job.overwrite, inputs)
    if save_map is not None:
        tables.check_output_folder(save_map, job.overwrite, [*inputs, *([] if piped else [out])])
    table = tables.read_table(job.input)
    texts = tables.column_texts(table, tables.pick_column(table, job.text_column, job.input), job.input)
    instruction = job.instruction
    if instruction_column is not None:
        column = tables.pick_column(table, instruction_column, job.input, "instruction")
        instruction = tables.column_texts(table, column, job.input)
    clashes = {"embedding", *(["answer"] if answering else [])} & set(map(str, table.columns))
    if clashes and out.suffix.lower() == ".parquet":
        raise InputError(f"{job.input} already has column(s) {sorted(clashes)}, which the output would add")
    store = checked_store(True) if cache else None
    options = replace(job.options, cache=store if store is not None else False)
    kept = (
        f"every finished batch is kept in the cache {store.path}; run the same command again to go on from there"
        if store is not None
        else f"nothing was written to {out}; with --cache an interrupted run keeps its finished batches"
    )
    embedder = _embedder(job.model, job.model_options, instruction, options, job.fit, job.generic, guided_map)
    with interruptible(kept):
        result = embedder.encode_multi(texts, [instruction], options)[0]
    if save_map is not None:
        (fitted,) = embedder.maps.values()
        fitted.save(save_map)
        typer.echo(f"saved the guided map to {save_map}", err=True)
    embeddings, answers = result if answering else (result, None)
    if piped:
        ids = table[job.id_column].tolist() if job.id_column else table["id"].tolist() if "id" in table else None
        tables.write_records(sys.stdout, ids or list(range(len(texts))), embeddings, answers)
    else:
        _write(out, embeddings, table, answers, answers_out)
    kind = "guided embeddings" if guided_map is not None else "embeddings"
    where = "standard output" if piped else out
    typer.echo(f"wrote {embeddings.shape[0]} {kind} of size {embeddings.shape[1]} to {where}", err=True)


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


def _encode_on_ray(job: _Job, options: EncodeOptions, where: Placement) -> None:
    """``--engine ray``: Parquet shards in the folder ``out``, the input's columns plus ``embedding``;
    every option of the command applies on the actors, or is refused before they start. With
    ``--guided``, the map is fitted on a sample and applied on the actors."""
    from inbedder import distributed, tables

    if "-" in (str(job.input), str(job.out)):
        raise InputError(
            "--engine ray reads files and writes a folder; '-' (standard input or output) is for local runs"
        )
    if job.instruction is None:
        raise InputError("--engine ray needs --instruction (one question for every text)")
    if not job.input.exists():
        raise InputError(f"no such file or folder: {job.input}")
    tables.check_output_folder(job.out, job.overwrite, inputs=[job.input])
    distributed.init(where.address)
    rows = {"text_column": job.text_column or "text", "id_column": job.id_column, "concurrency": where.concurrency}
    loaded = {"model": job.model, "model_options": job.model_options}
    try:
        if job.fit is not None:
            embedded = distributed.guided_dataset(
                job.input, job.instruction, job.fit, options, generic=job.generic, **loaded, **rows
            )
        else:
            embedded = distributed.embed_dataset(job.input, job.instruction, options, **loaded, **rows)
    except ValueError as err:  # refused before the actors start: an option they could not honour, a column
        raise as_input_error(err) from err
    about = {"command": "encode", "input": str(job.input), "instruction": job.instruction, "model": job.model}
    try:
        tables.atomic_folder(job.out, lambda folder: embedded.write_parquet(str(folder)), about)
    except Exception as err:
        refused = distributed.user_error(err)
        if refused is None:
            raise
        raise InputError(f"{job.input}: {refused}") from None
    typer.echo(f"wrote Parquet shards to {job.out}", err=True)
