"""What runs in ``compass daemon``: per language, on a schedule and under a lease, read -> step -> write -> dispatch.

service.py  the ``Daemon``: wires the parts below, the operator's requests (pause, resume, trigger), the API's views
check.py    one check of a language, in order: lease, read, the pure ``compass.drift.lifecycle.step``, write, dispatch
read.py     the ``Observation`` of a language (quality.py: the quality signal; farshare.py: the far share)
write.py    the fenced status write (state.py: what is stored), its metrics and JS history
publish.py  jobs and events out through dispatch.py (Kafka; the worker's reports in, to the inboxes)
unserved.py the check of the languages no adapter serves; leases.py, run.py (APScheduler), metrics.py, views.py,
            results.py (what a check returns), explain.py (which clusters drive JS), reload.py (languages.yaml)
"""
