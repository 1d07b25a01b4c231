"""Tables of the index, following the DICOM information model (study > series > instance).

Patient attributes live on the study row: a patient is the set of studies sharing a
PatientID, which is what a Patient Root C-FIND groups on.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

#: Study states: `receiving` until no instance arrived for `study.stable_seconds`, then `complete`.
STUDY_RECEIVING = "receiving"
STUDY_COMPLETE = "complete"

studies = Table(
    "studies",
    metadata,
    Column("study_instance_uid", String(64), primary_key=True),
    Column("patient_id", String(64), nullable=False, default=""),
    Column("issuer_of_patient_id", String(64), nullable=False, default=""),
    Column("patient_name", String(324), nullable=False, default=""),
    Column("patient_birth_date", String(8), nullable=False, default=""),
    Column("patient_sex", String(16), nullable=False, default=""),
    Column("study_date", String(8), nullable=False, default=""),
    Column("study_time", String(16), nullable=False, default=""),
    Column("accession_number", String(16), nullable=False, default=""),
    Column("study_id", String(16), nullable=False, default=""),
    Column("study_description", String(64), nullable=False, default=""),
    Column("referring_physician_name", String(324), nullable=False, default=""),
    Column("state", String(16), nullable=False, default=STUDY_RECEIVING),
    Column("last_received_at", Float, nullable=False),
    #: the names folded (`index.folding`) for case-insensitive matching; NULL only in an index
    #: made by an older version, until `open_engine` fills them in
    Column("patient_name_folded", Text),
    Column("referring_physician_name_folded", Text),
    Index("ix_studies_patient_id", "patient_id"),
    Index("ix_studies_study_date", "study_date"),
    Index("ix_studies_accession_number", "accession_number"),
    Index("ix_studies_state_last_received", "state", "last_received_at"),
    # Serves prefix wildcards (`DOE*`) too: SQLite's GLOB on a binary-collated column, and
    # PostgreSQL's LIKE through the pattern operator class, whatever the database's collation.
    Index(
        "ix_studies_patient_name_folded",
        "patient_name_folded",
        postgresql_ops={"patient_name_folded": "text_pattern_ops"},
    ),
)

#: Folded copies of person names (column -> the name column it folds).
FOLDED_NAMES = {
    "patient_name_folded": "patient_name",
    "referring_physician_name_folded": "referring_physician_name",
}

series = Table(
    "series",
    metadata,
    Column("series_instance_uid", String(64), primary_key=True),
    Column(
        "study_instance_uid",
        String(64),
        ForeignKey("studies.study_instance_uid"),
        nullable=False,
    ),
    Column("modality", String(16), nullable=False, default=""),
    Column("series_number", Integer),
    Column("series_description", String(64), nullable=False, default=""),
    Column("body_part_examined", String(16), nullable=False, default=""),
    Column("series_date", String(8), nullable=False, default=""),
    Column("series_time", String(16), nullable=False, default=""),
    Index("ix_series_study", "study_instance_uid"),
    Index("ix_series_modality", "modality"),
)

instances = Table(
    "instances",
    metadata,
    Column("sop_instance_uid", String(64), primary_key=True),
    Column(
        "series_instance_uid",
        String(64),
        ForeignKey("series.series_instance_uid"),
        nullable=False,
    ),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer),
    Column("transfer_syntax_uid", String(64), nullable=False),
    #: Path of the file relative to `storage.path`.
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("calling_ae_title", String(16), nullable=False, default=""),
    Column("received_at", Float, nullable=False),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("bits_allocated", Integer),
    Column("number_of_frames", Integer),
    Index("ix_instances_series", "series_instance_uid"),
    Index("ix_instances_received_at", "received_at"),
)

#: Job states, consumed by the pipeline (de-identify, infer, deliver).
JOB_PENDING = "pending"
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "study_instance_uid",
        String(64),
        ForeignKey("studies.study_instance_uid"),
        nullable=False,
    ),
    Column("state", String(16), nullable=False, default=JOB_PENDING),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text, nullable=False, default=""),
    #: the models a person chose for this job (a JSON list of bundle names, e.g. an upload in the
    #: console); NULL: the routing rules choose, series by series
    Column("models", Text),
    #: where the running attempt is (`index.progress`): when it started, the models it runs
    #: (comma-separated), its step and how far it got; NULL for a job that has not run since
    #: the index had them
    Column("started_at", Float),
    Column("running_models", Text),
    Column("step", Text),
    Column("percent", Integer),
    Index("ix_jobs_state", "state"),
    Index("ix_jobs_study", "study_instance_uid"),
)

#: De-identification pseudonyms and what they stand for (UIDs, patient IDs). Never leaves the node,
#: never logged: it is what lets results computed on de-identified copies find the original study.
pseudonyms = Table(
    "pseudonyms",
    metadata,
    Column("pseudonym", String(64), primary_key=True),
    Column("original", String(324), nullable=False),
    Column("kind", String(16), nullable=False),
)

#: What a job found and decided, one line per series and route (why a model did not run, what
#: was forwarded): the job's answer to "why did nothing happen?".
job_notes = Table(
    "job_notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("at", Float, nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_job_notes_job", "job_id"),
)

#: The timed steps of a job's attempts (a model on a series, forwarding to research), so a
#: study's timeline says what ran when and for how long.
job_steps = Table(
    "job_steps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("started_at", Float, nullable=False),
    #: NULL while the step runs, or when its attempt was interrupted
    Column("finished_at", Float),
    Index("ix_job_steps_job", "job_id"),
)

#: Each attempt of a job with its own start and end, so a job run again (a retry, a worker that
#: died) keeps the times of its earlier attempts; the job row holds only the latest's.
job_attempts = Table(
    "job_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    #: the job's attempt number (`jobs.attempts` when it began)
    Column("attempt", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    #: NULL while it runs, or when it was interrupted (a stop, a worker lost)
    Column("finished_at", Float),
    #: done or failed (NULL: not finished), and the failure's reason
    Column("state", String(16)),
    Column("error", Text, nullable=False, default=""),
    Index("ix_job_attempts_job", "job_id"),
)

#: Outbox states: `pending` until the destination acknowledged the object (`sent`), or until it
#: refused it too often (`failed`, with the reason; `dicom-node outbox retry` puts it back).
OUTBOX_PENDING = "pending"
OUTBOX_SENT = "sent"
OUTBOX_FAILED = "failed"

#: Objects waiting to be sent to a peer: durable, so a peer that is down gets them when it is
#: back, also after a restart. The file lives in the outgoing area until it was delivered.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("destination", String(64), nullable=False),
    Column("sop_instance_uid", String(64), nullable=False),
    #: Path of the file relative to the outgoing area.
    Column("path", Text, nullable=False),
    Column("job_id", Integer, ForeignKey("jobs.id")),
    Column("state", String(16), nullable=False, default=OUTBOX_PENDING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("destination", "sop_instance_uid", name="uq_outbox_destination_instance"),
    Index("ix_outbox_state_next", "state", "next_attempt_at"),
)

#: One row per host answering `/healthz`, rewritten by each check: the proof that the index
#: still takes a write (a SELECT passes on a full disk or a read-only database).
heartbeat = Table(
    "heartbeat",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("at", Float, nullable=False),
)

#: When each job was last published to the Celery broker (celery engine; the local engine
#: never writes it): the job row stays the truth, this only says which jobs a broker may have
#: lost (never published, or published long ago and not done), so the publishers send them
#: again. Times are the database's clock, shared by every host.
job_dispatch = Table(
    "job_dispatch",
    metadata,
    Column("job_id", Integer, ForeignKey("jobs.id"), primary_key=True),
    Column("published_at", Float, nullable=False),
)
