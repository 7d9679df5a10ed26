"""The adapter worker (`compass worker`, issue 5): takes update jobs from compass.jobs into a durable Redis queue,
runs reselection + ECDA training + the promotion gate per update job, re-fits the codebook on a recluster job
(recluster.py), and reports on compass.events."""

from daemon.worker.initial import adapt_language
from daemon.worker.pipeline import JobContext, run_job
from daemon.worker.queue import JobQueue, PendingJob
from daemon.worker.recluster import run_recluster
from daemon.worker.service import Worker

__all__ = ["JobContext", "JobQueue", "PendingJob", "Worker", "adapt_language", "run_job", "run_recluster"]
