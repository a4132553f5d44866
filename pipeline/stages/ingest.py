"""ingest: every trial of the data source checked -> the trial table (features_eeg writes the
manifest from it: the trials artifact cleaning keeps), classes (of the primary
task; tasks.json: of the secondary ones) and a report."""
from __future__ import annotations

from pipeline import io
from pipeline.data.ingest import ingest
from pipeline.params import Params


def run(params: Params) -> None:
    trials, classes, tasks, report = ingest(params)
    io.save_csv(io.TRIALS, trials)
    io.write_json(io.CLASSES, classes)
    io.write_json(io.TASKS, tasks)
    io.write_json(io.INGEST_REPORT, report)
    print(f"ingest: {len(trials)} trials, {trials['subject'].nunique()} subjects, classes {classes}, "
          f"views {', '.join(report['modalities'])}"
          + (f"; dropped {report['trials_dropped']} trial(s), {len(report['subjects_dropped'])} subject(s): "
             f"see {io.INGEST_REPORT}" if report["dropped"] else ""))
