"""The whole openwit job as one Airflow 3 DAG.

    extract -> curate -> download -> dedupe -> score -> shard -> validate -> train -> eval -> report

Every task runs an `openwit` command (BashOperator); the DAG holds no pipeline logic, only
command lines built from the run's parameters. Each stage writes under
``{output_root}/{extract,curate,download,dedupe,score,shards,train,eval}`` atomically and
deterministically, so a retried task reproduces its output; training resumes from its
latest complete checkpoint (``--resume auto``), so a retry loses at most one checkpoint
interval and a retry of a finished run changes nothing.

Beam stages run on the runner the ``beam_runner`` parameter names (the local FnApiRunner by
default; DataflowRunner, FlinkRunner, SparkRunner with their options in ``beam_options``).
Our commands hand every flag they do not know to Beam's PipelineOptions, so runner options
and flags a scheduler appends (``--labels=...``) pass through.

``validate`` is the gate before training: every stage's ledger adds up, the stages chain,
the download success rate and the shard and sample counts meet their thresholds; otherwise
the run stops with one line naming the check and its values.

Training runs through the ``deepspeed`` launcher: ``launcher=local`` starts ``nproc`` ranks
on the worker itself (``openwit train --nproc``), ``launcher=deepspeed`` runs
``deepspeed --hostfile HOSTFILE`` across nodes (passwordless ssh between them, as DeepSpeed's
launcher needs). docs/airflow.md shows a KubernetesPodOperator variant with GPU resources.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param


def _openwit_command() -> str:
    """How a worker starts openwit: $OPENWIT_COMMAND, else `openwit` on PATH, else this Python."""
    if os.environ.get("OPENWIT_COMMAND"):
        return os.environ["OPENWIT_COMMAND"]
    found = shutil.which("openwit")
    return shlex.quote(found) if found else f"{shlex.quote(sys.executable)} -m pipeline.cli"


OPENWIT = _openwit_command()
# no task is killed by a clock for doing real work: data stages get two days, training thirty
STAGE_TIMEOUT = timedelta(days=2)
TRAIN_TIMEOUT = timedelta(days=30)


def _sh(value: object) -> str:
    return shlex.quote(str(value))


def _shall(values: list | None, flag: str = "") -> str:
    """Each value shell-quoted, optionally each after ``flag`` (``--set a=1 --set b=2``)."""
    return " ".join((f"{flag} " if flag else "") + shlex.quote(str(v)) for v in (values or []))


# the Beam runner flags every Beam stage gets
BEAM = "--runner={{ params.beam_runner | sh }} {{ params.beam_options | shall }}"
ROOT = "{{ params.output_root | sh }}"

with DAG(
    dag_id="openwit",
    description="web crawl -> curated, deduplicated, balanced (image, text) shards -> CLIP pretraining -> eval",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["openwit"],
    doc_md=__doc__,
    user_defined_filters={"sh": _sh, "shall": _shall},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True,
                  "execution_timeout": STAGE_TIMEOUT},
    params={
        "input": Param("", type="string", minLength=1,
                       description="WAT/WARC files: a glob, a comma list, or a *.paths(.gz) list as Common Crawl publishes"),
        "output_root": Param("", type="string", minLength=1, description="the run's folder (local or gs://, s3://)"),
        "queries": Param("", type="string", description="query list file (one entry a line), or a folder of "
                         "per-language lists <language>.txt (worldwide); empty: curate's default"),
        "balance": Param("last", type="string", enum=["last", "online", "curate"],
                         description="where to balance: last (shard, on the counts after download and dedupe), "
                         "online (the trainer draws every epoch), or curate (before download)"),
        "t": Param(None, type=["null", "number"], exclusiveMinimum=0,
                   description="per-query balancing budget t; empty: the default (20,000) or target_size"),
        "target_size": Param(None, type=["null", "integer"], minimum=1,
                             description="choose t so that MetaCLIP's size estimate, sum over queries of min(count, t), is "
                             "this (instead of t)"),
        "curate_t": Param(None, type=["null", "number"], exclusiveMinimum=0,
                          description="balance=last or online: a larger t to balance with before download too "
                          "(fewer downloads); empty: curate keeps every matched text"),
        "per_language_t": Param(False, type="boolean",
                                description="balance last or online on a worldwide run (a folder of per-language "
                                "lists): t sets English's, every other language keeps English's tail share"),
        "languages": Param("", type="string", description="languages to keep, comma-separated, or 'all'; empty: "
                           "curate's default (en, or with a folder of per-language query lists, their languages)"),
        "beam_runner": Param("FnApiRunner", type="string",
                             enum=["FnApiRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner"],
                             description="the Beam runner for extract, curate, dedupe and shard"),
        "beam_options": Param([], type="array", items={"type": "string"},
                              description="more Beam pipeline options, e.g. --project=P --region=R --temp_location=gs://..."),
        "download_processes": Param(4, type="integer", minimum=1),
        "download_threads": Param(32, type="integer", minimum=1),
        "image_size": Param(256, type="integer", minimum=16),
        "samples_per_shard": Param(10_000, type="integer", minimum=1),
        "download_options": Param([], type="array", items={"type": "string"},
                                  description="more `openwit download` flags (e.g. --timeout=5, --allow=10.0.0.0/8)"),
        "eval_images": Param([], type="array", items={"type": "string"},
                             description="NAME=PATH image sets to decontaminate against (dedupe --eval-images)"),
        "dedupe_options": Param([], type="array", items={"type": "string"}, description="more `openwit dedupe` flags"),
        "score_model": Param("", type="string",
                             description="an `openwit export` folder to filter with (CLIP score or a filter network); "
                             "empty: no model-based filtering (the score task does nothing and shard reads dedupe)"),
        "score_keep_top": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=1,
                                description="with score_model: keep this fraction of highest score (DataComp: 0.3)"),
        "score_min_score": Param(None, type=["null", "number"], minimum=-1, maximum=1,
                                 description="with score_model: keep the samples scoring at least this"),
        "score_options": Param([], type="array", items={"type": "string"},
                               description="more `openwit score` flags (--device cuda, --batch-size 256, ...)"),
        "min_download_success": Param(0.5, type="number", minimum=0, maximum=1),
        "min_shards": Param(1, type="integer", minimum=1),
        "min_samples": Param(1, type="integer", minimum=1),
        "recipe": Param("debug", type="string", description="training recipe (`openwit train --help` lists them)"),
        "train_settings": Param([], type="array", items={"type": "string"},
                                description="KEY=VALUE training overrides (--set), e.g. epochs=32"),
        "launcher": Param("local", type="string", enum=["local", "deepspeed"],
                          description="local: nproc ranks on the worker; deepspeed: across the hostfile's nodes"),
        "nproc": Param(1, type="integer", minimum=1, description="ranks per node (GPUs per node)"),
        "hostfile": Param("", type="string", description="DeepSpeed hostfile (launcher=deepspeed)"),
        "eval_suite": Param("", type="string",
                            description="a folder of CLIP_benchmark-layout sets (zeroshot_*/, retrieval/); empty: no eval"),
        "eval_options": Param([], type="array", items={"type": "string"},
                              description="more `openwit eval` flags, e.g. --linear-probe"),
    },
) as dag:
    extract = BashOperator(
        task_id="extract",
        bash_command=f"{OPENWIT} extract --input {{{{ params.input | sh }}}} --output {ROOT}/extract {BEAM}",
    )
    curate = BashOperator(
        task_id="curate",
        bash_command=(
            f"{OPENWIT} curate --input {ROOT}/extract --output {ROOT}/curate"
            " {% if params.queries %}--queries {{ params.queries | sh }}{% endif %}"
            " {% if params.balance == 'curate' %}"
            "{% if params.t %}--t {{ params.t }}{% endif %}"
            " {% if params.target_size %}--target-size {{ params.target_size }}{% endif %}"
            "{% elif params.curate_t %}--t {{ params.curate_t }}{% else %}--no-balance{% endif %}"
            " {% if params.languages %}--languages {{ params.languages | sh }}{% endif %}"
            f" {BEAM}"),
    )
    download = BashOperator(
        task_id="download",
        bash_command=(
            f"{OPENWIT} download --input {ROOT}/curate --output {ROOT}/download"
            " --workers {{ params.download_processes }} --threads {{ params.download_threads }}"
            " --image-size {{ params.image_size }} --samples-per-shard {{ params.samples_per_shard }}"
            " {{ params.download_options | shall }}"),
    )
    dedupe = BashOperator(
        task_id="dedupe",
        bash_command=(
            f"{OPENWIT} dedupe --input {ROOT}/download --output {ROOT}/dedupe"
            " {{ params.eval_images | shall('--eval-images') }} {{ params.dedupe_options | shall }}"
            f" {BEAM}"),
    )
    score = BashOperator(
        task_id="score",
        bash_command=(
            "{% if params.score_model %}"
            f"{OPENWIT} score --keep {ROOT}/dedupe --images {ROOT}/download --output {ROOT}/score"
            " --model {{ params.score_model | sh }}"
            " {% if params.score_keep_top %}--keep-top {{ params.score_keep_top }}{% endif %}"
            " {% if params.score_min_score is not none %}--min-score {{ params.score_min_score }}{% endif %}"
            f" {{{{ params.score_options | shall }}}} {BEAM}"
            "{% else %}echo 'no score_model given: no model-based filtering'{% endif %}"),
    )
    shard = BashOperator(
        task_id="shard",  # not-a-column: the task id
        bash_command=(
            f"{OPENWIT} shard --keep {ROOT}/{{% if params.score_model %}}score{{% else %}}dedupe{{% endif %}} --images {ROOT}/download --curated {ROOT}/curate"
            f" --output {ROOT}/shards --samples-per-shard {{{{ params.samples_per_shard }}}}"
            " {% if params.balance != 'curate' %}--balance {{ params.balance }}"
            " {% if params.t %}--t {{ params.t }}{% endif %}"
            " {% if params.target_size %}--target-size {{ params.target_size }}{% endif %}"
            " {% if params.per_language_t %}--per-language-t{% endif %}{% endif %}"
            f" {BEAM}"),
    )
    validate = BashOperator(
        task_id="validate",
        retries=0,  # a failed check is a verdict on the data, not a transient fault
        bash_command=(
            f"{OPENWIT} validate {ROOT} --min-download-success {{{{ params.min_download_success }}}}"
            " --min-shards {{ params.min_shards }} --min-samples {{ params.min_samples }}"),
    )
    train_args = (
        f"--recipe {{{{ params.recipe | sh }}}} --data {ROOT}/shards --output {ROOT}/train --resume auto"
        " {% if params.eval_suite %}--set eval_suite={{ params.eval_suite | sh }}{% endif %}"
        " {{ params.train_settings | shall('--set') }}")
    train = BashOperator(
        task_id="train",
        execution_timeout=TRAIN_TIMEOUT,
        bash_command=(
            "{% if params.launcher == 'deepspeed' %}"
            "deepspeed --hostfile {{ params.hostfile | sh }} --num_gpus {{ params.nproc }} --module trainer.main "
            + train_args
            + "{% else %}"
            + f"{OPENWIT} train --nproc {{{{ params.nproc }}}} " + train_args
            + "{% endif %}"),
    )
    evaluate = BashOperator(
        task_id="eval",
        bash_command=(
            "{% if params.eval_suite %}"
            f"{OPENWIT} eval --model {ROOT}/train --suite {{{{ params.eval_suite | sh }}}}"
            f" {{{{ params.eval_options | shall }}}} --output {ROOT}/eval/results.json"
            "{% else %}echo 'no eval_suite given: nothing to evaluate'{% endif %}"),
    )
    report = BashOperator(
        task_id="report",
        bash_command=f"{OPENWIT} report {ROOT}",
    )

    extract >> curate >> download >> dedupe >> score >> shard >> validate >> train >> evaluate >> report
