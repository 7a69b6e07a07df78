"""The `clipsql` command: one entry point, one subcommand per stage or question.

Rows go to stdout (`--format table|json|csv`); progress bars, stage reports and errors go to
stderr. Exit codes: 0 success, 1 failure, 2 usage, 3 source, 4 model, 5 database, 6 not
found, 75 locked (another process holds the database).
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import DEFAULT_MODEL, Settings, load_settings, redact
from .db import open_database
from .encoders import use_data_dir
from .errors import ClipsqlError, UsageError
from .lock import writer_lock
from .output import FORMATS, emit
from .report import StageReport
from .train.commands import add_eval_parser, add_train_parser, run_eval, run_train

EPILOG = """examples:
  clipsql demo                                   offline sample: extract, embed, load, search, analytics
  clipsql run --limit 1000                       Unsplash Lite: first 1000 photos, CLIP ViT-B/32
  clipsql search --text "foggy mountain lake" -k 5
  clipsql search --photo-id XMyPniM9LF0 --format json
  clipsql query similar_downloads --param photo_id=XMyPniM9LF0 --param k=10
  clipsql sql "SELECT count() FROM conversions"
  clipsql serve                                  the web app on http://127.0.0.1:8000/

configuration: flags > environment (CLIPSQL_DATA_DIR, CLIPSQL_DSN, CLIPSQL_MODEL, ...) > .env > defaults.
The database password comes only from the CLIPSQL_PASSWORD environment variable."""

log = logging.getLogger("clipsql")
READ_ONLY_STATEMENT = re.compile(r"^\s*(\(|SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.IGNORECASE)


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("where")
    group.add_argument("--data-dir", metavar="DIR", help="data directory (env CLIPSQL_DATA_DIR, default ./data)")
    group.add_argument("--dsn", metavar="DSN",
                       help="chdb:///path or http(s)://user@host:port/db (env CLIPSQL_DSN; default chDB in DATA_DIR)")
    group.add_argument("--dialect", choices=("auto", "clickhouse", "myscale"),
                       help="SQL dialect of the database (env CLIPSQL_DIALECT; default auto: detected)")
    group.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    group.add_argument("--log-file", metavar="PATH",
                       help="also append messages to PATH (rotated at 10 MB, 5 kept); for cron and systemd")
    return parent


def _formats() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    return parent


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


SELECTION_FLAGS = {"collection": "in a collection (id or title)", "keyword": "tagged with a keyword",
                   "country": "taken in a country", "photographer": "by a photographer (username)",
                   "since": "submitted on or after a date (YYYY-MM-DD)", "until": "submitted on or before a date",
                   "min_downloads": "downloaded at least N times"}


def _index_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("vector indexes (changing them rebuilds the index on the next load)")
    group.add_argument("--index-quantization", choices=("f32", "bf16", "f16", "i8", "b1"),
                       help="HNSW vector storage (env CLIPSQL_INDEX_QUANTIZATION, default bf16)")
    group.add_argument("--index-m", type=_positive_int, metavar="M", help="HNSW edges per node (default 32)")
    group.add_argument("--index-ef-construction", type=_positive_int, metavar="N",
                       help="HNSW build candidate list size (default 128)")
    group.add_argument("--ivf-lists", type=int, metavar="N",
                       help="IVF k-means cells (default about sqrt(vectors); 0: no IVF)")


def _selection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (all must hold)")
    for name, help_text in SELECTION_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", action="append", metavar="VALUE", help=f"only photos {help_text}")
    group.add_argument("--where", action="append", metavar="SQL",
                       help="only photos matching a SQL condition on the photos table's columns")
    group.add_argument("--in", dest="selections", action="append", default=[], metavar="KIND:VALUE",
                       help="only photos in a selection, e.g. keyword:lake, collection:Nature, ids:a,b")


def _selection_texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.selections)
    for name in SELECTION_FLAGS:
        texts += [f"{name}:{value}" for value in getattr(args, name) or []]
    texts += [f"where:{value}" for value in args.where or []]
    return texts


def build_parser() -> argparse.ArgumentParser:
    common, formats = _common(), _formats()
    parser = argparse.ArgumentParser(
        prog="clipsql",
        description="Image search as SQL: Unsplash Lite -> CLIP embeddings -> Parquet -> ClickHouse vector indexes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"clipsql {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common, *parents])

    source_help = ("dataset: an http(s) URL of an Unsplash Lite zip (default: the published one), a local zip or "
                   "directory of TSV files, hf:OWNER/NAME (precomputed vectors), sample (bundled, offline), or a "
                   "labelled image set: folder:PATH (class sub-folders), cifar10:PATH, idx:PATH (MNIST-style)")
    model_help = (f"HuggingFace CLIP/SigLIP model id (default {DEFAULT_MODEL}), a local save_pretrained directory, "
                  "efficientnet-lite0 (offline ImageNet weights), color-histogram, pixels, phash, or a model made "
                  "by `clipsql train` (pca, autoencoder, triplet-BASE)")

    run = command("run", "extract + embed + load, with the stage reports at the end")
    run.add_argument("--source", help=source_help)
    run.add_argument("--limit", type=_positive_int, help="keep only the first N photos")
    run.add_argument("--model", help=model_help)
    run.add_argument("--retry-failed", action="store_true", help="fetch again the images that failed before")
    _index_arguments(run)

    refresh = command("refresh", "bring the database up to date with the source: only new or changed photos cost work")
    refresh.add_argument("--source", help=source_help + " (default: the last run's)")
    refresh.add_argument("--limit", type=_positive_int, help="keep only the first N photos (default: the last run's)")
    refresh.add_argument("--model", help="embed with this model only (default: every model embedded before)")
    refresh.add_argument("--retry-failed", action="store_true", help="fetch again the images that failed before")

    extract = command("extract", "read the dataset into typed Parquet files (one per table)")
    extract.add_argument("--source", help=source_help)
    extract.add_argument("--limit", type=_positive_int, help="keep only the first N photos and their rows")

    embed = command("embed", "compute image vectors for photos that do not have one yet")
    embed.add_argument("--model", help=model_help)
    embed.add_argument("--batch-size", type=_positive_int, help="images per model call (default 32)")
    embed.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the model runs (default auto)")
    embed.add_argument("--workers", type=_positive_int, help="concurrent image downloads (default 16)")
    embed.add_argument("--retry-failed", action="store_true", help="fetch again the images that failed before")

    load = command("load", "create the ClickHouse tables from Parquet and build the vector indexes")
    _index_arguments(load)

    gc = command("gc", "remove staging tables, superseded cached images, merged embedding parts, old reports")
    gc.add_argument("--keep-reports", type=_positive_int, default=30, help="stage reports kept per stage (default 30)")

    search = command("search", "find the photos nearest to a photo, an image or a text", formats)
    what = search.add_mutually_exclusive_group(required=True)
    what.add_argument("--photo-id", metavar="ID", help="a photo in the database (excluded from its own results)")
    what.add_argument("--image", metavar="PATH_OR_URL", help="an image file or http(s) URL")
    what.add_argument("--text", metavar="TEXT", action="append",
                      help="a text description (CLIP models); repeat to add several")
    search.add_argument("--minus", metavar="TEXT", action="append",
                        help="a text to subtract from the --text query (\"beach\" minus \"people\"); repeatable")
    predicate = search.add_argument_group("predicate and metric")
    predicate.add_argument("-k", type=_positive_int, default=10, help="how many results (default 10)")
    predicate.add_argument("--radius", type=float, metavar="R",
                           help="instead of k: every photo within distance R, nearest first")
    predicate.add_argument("--metric", choices=("cosine", "l2"), default="cosine", help="distance (default cosine)")
    plan = search.add_argument_group("plan")
    plan.add_argument("--method", choices=("auto", "hnsw", "ivf", "exact"), default="auto",
                      help="HNSW index, IVF cells, or a full scan (default auto: the index if there is one)")
    plan.add_argument("--exact", action="store_true", help="same as --method exact")
    plan.add_argument("--ef-search", type=_positive_int, metavar="N",
                      help="HNSW candidate list size (hnsw_candidate_list_size_for_search; default 256)")
    plan.add_argument("--nprobe", type=_positive_int, metavar="N", help="IVF cells to scan (default a fifth, at least 8)")
    _selection_arguments(search)
    search.add_argument("--model", help="which loaded model to search (default: the last one embedded)")
    pictures = search.add_argument_group("pictures (a contact sheet of the key and the results with their scores)")
    pictures.add_argument("--html", metavar="FILE.html", help="also write it as one self-contained HTML page")
    pictures.add_argument("--png", metavar="FILE.png", help="also write it as a PNG image grid")
    join = command("join", "similarity join: each photo of set A with its nearest photos in set B", formats)
    join.add_argument("--a", action="append", metavar="KIND:VALUE",
                      help="set A as a selection (keyword:lake, collection:..., country:..., ids:a,b; default all "
                           "photos); repeat to intersect")
    join.add_argument("--b", action="append", metavar="KIND:VALUE", help="set B, the same way (default all photos)")
    join.add_argument("--b-data-dir", metavar="DIR",
                      help="set B: every photo of another clipsql data directory (an image set extracted and "
                           "embedded there with the same model)")
    join_predicate = join.add_mutually_exclusive_group()
    join_predicate.add_argument("-k", type=_positive_int, help="kNN join: the k nearest B photos of each A photo "
                                "(default 10)")
    join_predicate.add_argument("--radius", type=float, metavar="R", help="range join: every pair within distance R")
    join.add_argument("--metric", choices=("cosine", "l2"), default="cosine", help="distance (default cosine)")
    join.add_argument("--method", choices=("exact", "index"), default="exact",
                      help="exact: batched matrix products in this process (default); index: one HNSW query per A photo")
    join.add_argument("--batch-size", type=_positive_int, default=512, help="A photos per batch (default 512)")
    join.add_argument("--output", metavar="FILE.parquet", help="write the pairs to a Parquet file instead of printing")
    join.add_argument("--model", help="which loaded model (default: the last one embedded)")

    kw = command("keywords", "keywords near a keyword, or tags for a photo, image or text (CLIP keyword vectors)",
                 formats)
    about = kw.add_mutually_exclusive_group(required=True)
    about.add_argument("--like", metavar="KEYWORD", help="keywords similar to this one")
    about.add_argument("--photo-id", metavar="ID", help="tag a stored photo: the keywords nearest to its image")
    about.add_argument("--image", metavar="PATH_OR_URL", help="tag an image file or URL")
    about.add_argument("--text", metavar="TEXT", help="keywords nearest to a text")
    kw.add_argument("-k", type=_positive_int, default=10, help="how many keywords (default 10)")
    kw.add_argument("--model", help="which loaded model (default: the last one embedded)")

    dups = command("duplicates", "near-duplicate groups: same file, similar perceptual hash, or close vectors",
                   formats)
    dups.add_argument("--tier", action="append", choices=("exact", "phash", "embedding"),
                      help="evidence to use (default all three): same sha256, Hamming distance of 64-bit "
                           "perceptual hashes, cosine distance of image vectors")
    dups.add_argument("--max-hamming", type=int, default=10, metavar="BITS",
                      help="phash tier: most differing bits of 64 (default 10)")
    dups.add_argument("--max-distance", type=float, default=0.08, metavar="D",
                      help="embedding tier: largest cosine distance (default 0.08; depends on the model)")
    dups.add_argument("--model", help="which loaded model the embedding tier uses (default: the last one embedded)")
    _selection_arguments(dups)

    ddl = command("ddl", "print the schema as a SQL script: one server or a cluster, ClickHouse or MyScale")
    ddl.add_argument("--cluster", metavar="NAME",
                     help="ON CLUSTER NAME: Replicated local_ tables and Distributed tables in front")
    ddl.add_argument("--model", action="append", metavar="MODEL[=DIM]",
                     help="embedding tables for these models (default: the models embedded in the data directory, "
                          "else the default CLIP model, 512-d)")
    ddl.add_argument("--output", metavar="FILE.sql", help="write the script to a file instead of printing it")
    _index_arguments(ddl)

    verify = command("verify", "measure the recall@k and latency of the approximate plans against exact search",
                     formats)
    verify.add_argument("--model", help="which loaded model (default: the last one embedded)")
    verify.add_argument("--queries", type=_positive_int, default=100, help="sampled query photos (default 100)")
    verify.add_argument("-k", type=_positive_int, default=10, help="neighbours per query (default 10)")
    verify.add_argument("--metric", choices=("cosine", "l2"), default="cosine", help="distance (default cosine)")
    verify.add_argument("--method", action="append", choices=("hnsw", "ivf"),
                        help="plans to check (default every plan the model has)")
    verify.add_argument("--ef-search", type=_positive_int, metavar="N", help="HNSW candidate list size")
    verify.add_argument("--nprobe", type=_positive_int, metavar="N", help="IVF cells to scan")
    verify.add_argument("--min-recall", type=float, default=0.9, help="fail below this mean recall (default 0.9)")
    verify.add_argument("--seed", type=int, default=0, help="which sample of queries (default 0)")

    query = command("query", "run a named analytics query from queries/", formats)
    query.add_argument("name", nargs="?", help="query name (see --list)")
    query.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a query parameter")
    query.add_argument("--list", action="store_true", help="list the queries with their parameters")

    sql = command("sql", "run ad-hoc SQL (read-only unless --write)", formats)
    sql.add_argument("statement", help="the SQL statement")
    sql.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="bind a {KEY:Type} parameter used in the statement")
    sql.add_argument("--write", action="store_true", help="allow statements that change data or schema")

    command("status", "what is loaded: tables, models, coverage, index", formats)

    demo = command("demo", "offline demo on the bundled sample: run the pipeline, search, analytics", formats)
    demo.add_argument("--model", help=f"default: {DEFAULT_MODEL} if its weights are cached, else efficientnet-lite0")
    demo.add_argument("-k", type=_positive_int, default=5, help="results per search (default 5)")

    serve = command("serve", "the web app: pick a key image (or text, or an upload), see its nearest photos and "
                    "their download analytics")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--model", help="the model the pages start with (default: the last one embedded)")
    serve.add_argument("--workers", type=_positive_int, default=1,
                       help="server processes (default 1; more only with a ClickHouse server DSN, not chDB)")

    add_train_parser(commands, common, _positive_int)
    add_eval_parser(commands, common, formats, _positive_int)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in
             ("data_dir", "dsn", "dialect", "source", "model", "batch_size", "device", "workers", "index_quantization",
              "index_m", "index_ef_construction", "ivf_lists")}
    return load_settings(flags)


def _report(settings: Settings, report: StageReport, quiet: bool) -> None:
    report.save(settings.paths().reports)
    log.info(report.summary())


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from .runner import run_pipeline

    reports = run_pipeline(settings, source=args.source, limit=args.limit,
                           models=[args.model] if args.model else None, retry_failed=args.retry_failed)
    log.info("\n".join(["", "run finished:"] + [r.summary() for r in reports]))
    return 0


def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    from .runner import refresh_defaults, run_pipeline

    source, limit, models = refresh_defaults(settings, args.source, args.limit, args.model)
    log.info("refresh: source %s, limit %s, models %s", redact(source), limit or "none", ", ".join(models))
    reports = run_pipeline(settings, source=source, limit=limit, models=models, retry_failed=args.retry_failed,
                           command="refresh", collect_garbage=True)
    log.info("\n".join(["", "refresh finished:"] + [r.summary() for r in reports]))
    return 0


def cmd_extract(args: argparse.Namespace, settings: Settings) -> int:
    from .extract import extract
    from .state import update_state

    _report(settings, extract(settings, args.source, args.limit), args.quiet)
    update_state(settings.paths(), source=redact(args.source or settings.source), limit=args.limit)
    return 0


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    from .embed import embed
    from .state import update_state

    model = args.model or settings.model
    _report(settings, embed(settings, model, retry_failed=args.retry_failed), args.quiet)
    update_state(settings.paths(), model=model)
    return 0


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from .load import load

    with open_database(settings) as db:
        _report(settings, load(db, settings), args.quiet)
    return 0


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    from .gc import collect_garbage

    with open_database(settings) as db:
        _report(settings, collect_garbage(db, settings, args.keep_reports), args.quiet)
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from .search import SearchOptions, search
    from .selection import parse_selection

    options = SearchOptions(k=args.k, metric=args.metric, radius=args.radius,
                            method="exact" if args.exact else args.method, ef_search=args.ef_search,
                            nprobe=args.nprobe, within=parse_selection(_selection_texts(args), allow_sql=True))
    with open_database(settings) as db:
        result = search(db, settings, photo_id=args.photo_id, image=args.image, text=args.text, minus=args.minus,
                        model=args.model, options=options)
        if args.html or args.png:
            from .contact_sheet import write_contact_sheets
            from .images import ImageFetcher

            fetcher = ImageFetcher(settings.paths().images, timeout=settings.http_timeout, retries=settings.http_retries)
            for path in write_contact_sheets(db, fetcher, result, photo_id=args.photo_id, image=args.image,
                                             text=args.text, minus=args.minus, metric=args.metric, radius=args.radius,
                                             html_path=args.html, png_path=args.png):
                log.info("contact sheet written to %s", path)
    emit(result.rows, args.format)
    for warning in result.warnings:
        log.warning("warning: %s", warning)
    log.info("model %s; plan %s; %.3f s", result.model.name, result.plan, result.seconds)
    return 0


def cmd_join(args: argparse.Namespace, settings: Settings) -> int:
    import pyarrow as pa

    from .join import PAIR_SCHEMA, JoinSpec, similarity_join, write_pairs
    from .search import resolve_model
    from .selection import parse_selection

    spec = JoinSpec(a=parse_selection(args.a or [], allow_sql=True), b=parse_selection(args.b or [], allow_sql=True),
                    k=None if args.radius is not None else (args.k or 10), radius=args.radius, metric=args.metric,
                    method=args.method, batch_size=args.batch_size,
                    b_data_dir=Path(args.b_data_dir).expanduser() if args.b_data_dir else None)
    started = time.perf_counter()
    with open_database(settings) as db:
        model = resolve_model(db, settings, args.model)
        pairs = similarity_join(db, model, spec)
        if args.output:
            count = write_pairs(pairs, Path(args.output))
            log.info("%d pairs written to %s", count, args.output)
        else:
            table = pa.Table.from_batches(list(pairs), schema=PAIR_SCHEMA)
            count = table.num_rows
            emit(table, args.format)
    b_text = f"the photos of {spec.b_data_dir}" if spec.b_data_dir else spec.b.describe()
    log.info("join of %s with %s (%s, %s, %s): %d pairs in %.2f s", spec.a.describe(), b_text,
             f"k={spec.k}" if spec.k else f"radius={spec.radius}", spec.metric, spec.method, count,
             time.perf_counter() - started)
    return 0


def cmd_keywords(args: argparse.Namespace, settings: Settings) -> int:
    from .keywords import keyword_vector, nearest_keywords
    from .search import query_vector, resolve_model

    with open_database(settings) as db:
        model = resolve_model(db, settings, args.model)
        if args.like:
            vector = keyword_vector(db, model, args.like)
            if vector is None:  # not in the dataset: encode it like any text
                vector = query_vector(db, settings, model, text=[args.like])
        else:
            vector = query_vector(db, settings, model, photo_id=args.photo_id, image=args.image,
                                  text=[args.text] if args.text else None)
        rows = nearest_keywords(db, model, vector, args.k, exclude=args.like or "", photo_id=args.photo_id or "")
    emit(rows, args.format)
    return 0


def cmd_duplicates(args: argparse.Namespace, settings: Settings) -> int:
    from .duplicates import TIERS, DuplicateOptions, collect_pairs, group_pairs
    from .search import resolve_model
    from .selection import parse_selection

    options = DuplicateOptions(tiers=tuple(args.tier or TIERS), max_hamming=args.max_hamming,
                               max_distance=args.max_distance,
                               within=parse_selection(_selection_texts(args), allow_sql=True))
    options.check()
    with open_database(settings) as db:
        model = resolve_model(db, settings, args.model) if "embedding" in options.tiers else None
        rows = group_pairs(collect_pairs(db, model, options))
    emit(rows, args.format)
    log.info("%d photos in %d duplicate groups", len(rows), len({r["group"] for r in rows}))
    return 0


def cmd_ddl(args: argparse.Namespace, settings: Settings) -> int:
    from .ddl import ModelSchema, render_script, schema_statements
    from .dialect import get_dialect
    from .load import IndexParams
    from .store import EmbeddingStore, model_slug, stored_models

    models = []
    for spec in args.model or []:
        name, _, dim = spec.partition("=")
        meta = EmbeddingStore(settings.paths().embeddings, name).meta() or {}
        if not dim and not meta:
            raise UsageError(f"--model {spec}: no vectors of it in {settings.data_dir}; give its dimension as {name}=DIM")
        try:
            models.append(ModelSchema(model_slug(name), int(dim or meta["dim"])))
        except ValueError:
            raise UsageError(f"--model {spec}: the dimension must be a whole number") from None
    if not args.model:
        stored = [EmbeddingStore(settings.paths().embeddings, m) for m in stored_models(settings.paths().embeddings)]
        models = [ModelSchema(s.slug, int(s.meta()["dim"])) for s in stored] or [ModelSchema(model_slug(DEFAULT_MODEL), 512)]
    script = render_script(schema_statements(models, get_dialect(settings.dialect), args.cluster,
                                             IndexParams.from_settings(settings)))
    if args.output:
        Path(args.output).write_text(script, encoding="utf-8")
        log.info("schema for %d model(s) written to %s", len(models), args.output)
    else:
        sys.stdout.write(script)
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from .search import SearchOptions, resolve_model, vector_index_exists
    from .verify import check_threshold, verify

    if not 0 <= args.min_recall <= 1:
        raise UsageError(f"--min-recall must be between 0 and 1, got {args.min_recall}")
    with open_database(settings) as db:
        model = resolve_model(db, settings, args.model)
        available = {"hnsw": vector_index_exists(db, model.table), "ivf": db.table_exists(model.centroids_table)}
        methods = args.method or [method for method, present in available.items() if present]
        if not methods:
            raise UsageError(f"model {model.name} has neither an HNSW index nor IVF cells; run `clipsql load`")
        options = SearchOptions(k=args.k, metric=args.metric, ef_search=args.ef_search, nprobe=args.nprobe)
        rows = verify(db, model, methods=methods, queries=args.queries, options=options, seed=args.seed)
    emit(rows, args.format)
    check_threshold(rows, args.min_recall)
    return 0


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    from .queries import list_queries, parse_param_args, run_query

    if args.list or not args.name:
        rows = [{"name": q.name, "summary": q.summary,
                 "parameters": ", ".join(f"{p.name} {p.type}" + (f"={p.default}" if p.default else "") for p in q.params)}
                for q in list_queries()]
        emit(rows, args.format)
        return 0
    with open_database(settings) as db:
        emit(run_query(db, settings, args.name, parse_param_args(args.param)), args.format)
    return 0


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from .queries import parse_param_args
    from .sqlfile import SqlFile, bind_parameters

    statement = args.statement.strip().rstrip(";")
    if not statement:
        raise UsageError("the SQL statement is empty")
    pseudo = SqlFile(name="sql", path=None, summary="", description="", text=statement)  # type: ignore[arg-type]
    params = bind_parameters(pseudo, parse_param_args(args.param))
    with open_database(settings) as db:
        if READ_ONLY_STATEMENT.match(statement):
            emit(db.query_arrow(statement, params), args.format)
        elif not args.write:
            raise UsageError("this statement may change data or schema; add --write if that is what you want")
        else:
            result = db.command(statement, params)
            log.info("ok%s", "" if result in (None, "") else f": {result}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from .status import collect_status

    with open_database(settings) as db:
        emit(collect_status(db, settings), args.format)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from .web import serve

    serve(settings, host=args.host, port=args.port, model=args.model, workers=args.workers)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from .demo import run_demo

    run_demo(settings, model=args.model, k=args.k, fmt=args.format, quiet=args.quiet)
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    _report(settings, run_train(args, settings), args.quiet)
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    emit(run_eval(args, settings), args.format)
    return 0


COMMANDS = {
    "train": cmd_train, "eval": cmd_eval,
    "run": cmd_run, "refresh": cmd_refresh, "gc": cmd_gc, "extract": cmd_extract, "embed": cmd_embed, "load": cmd_load, "search": cmd_search,
    "ddl": cmd_ddl, "join": cmd_join, "duplicates": cmd_duplicates, "keywords": cmd_keywords, "verify": cmd_verify, "query": cmd_query, "sql": cmd_sql, "status": cmd_status, "demo": cmd_demo,
    "serve": cmd_serve,
}


WRITERS = {"run", "refresh", "extract", "embed", "load", "demo", "gc", "train"}


def _configure_logging(quiet: bool, log_file: str | None) -> list[logging.Handler]:
    """Messages go to stderr (unless --quiet) and, with --log-file, to a rotated file."""
    handlers: list[logging.Handler] = []
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers.append(console)
    if log_file:
        Path(log_file).expanduser().parent.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(log_file, maxBytes=10 << 20, backupCount=5, encoding="utf-8")
        rotating.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
        handlers.append(rotating)
    log.handlers[:] = handlers
    log.setLevel(logging.INFO)
    log.propagate = False
    for noisy in ("clickhouse_connect", "httpx", "urllib3", "datasets", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = _configure_logging(args.quiet, args.log_file)
    try:
        settings = _settings(args)
        use_data_dir(settings.data_dir)  # where trained encoders (pca, autoencoder, triplet-*) are found
        if args.command in WRITERS:
            with writer_lock(settings.data_dir, f"clipsql {args.command}"):
                return COMMANDS[args.command](args, settings)
        return COMMANDS[args.command](args, settings)
    except ClipsqlError as exc:
        log.error("clipsql %s: error: %s", args.command, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("clipsql %s: interrupted", args.command)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        for handler in handlers:
            handler.close()


if __name__ == "__main__":
    sys.exit(main())
