"""Service benchmark: erasure jobs end to end through the real API and real RQ workers.

:func:`run_bench_service` (``featureedit bench --service``) starts a private
:class:`~ops.stack.LocalStack` on loopback (own Redis, ``serve --no-worker``, N ``worker``
processes, a fresh store), submits erasures over HTTP and waits for each, then splits every job's
latency into stages from two sources that never see a secret:

* the record's history (API-side timestamps): ``queue_wait`` = first ``running`` event minus
  ``created_at``; ``e2e_server`` = terminal event minus ``created_at``;
* the worker's ``timings`` (``ErasurePublic.timings``): ``model_load`` (``model_cached`` says
  whether the worker already held the model: the first job of a worker is *cold*, later ones
  *warm*, see :mod:`workers.cache`), ``baseline`` (the unedited model's metrics), ``locate``,
  ``edit``, ``evaluate``, ``publish`` (a full checkpoint: the edited safetensors and the delta;
  a delta-only one: the delta; sizes from the checkpoint manifest) and ``total``.

``engine`` = baseline + locate + edit + evaluate (what :func:`editing.erase.run_erasure`
computes); ``overhead`` = ``e2e_server`` - ``engine`` (queueing, model load, publishing and the
service's bookkeeping). ``e2e_client`` adds the client's polling resolution (0.2 s).

Jobs, one at a time unless noted: the first job (FeatureEdit, 1 fact) is cold; then, per fact
count (1, 10, 100 by default) and per method (FeatureEdit and the neuron baseline, same facts),
one warm job; then ``throughput_jobs`` 1-fact jobs submitted at once (jobs per minute with the
stack's workers); then, per publish mode (``publish_modes``: full and delta), ``publish_repeats``
1-fact FeatureEdit jobs asking for that mode (publish time and checkpoint bytes, full vs delta).
Then the evaluation-set sweep: per Locality set size (``eval_sizes``, in
prompts; 50, 200, 400 by default; 200 is the service's default set) a fresh worker started with
that size as its operator setting (``FEATUREEDIT_WORKER_LOCALITY_*``, see
:class:`workers.config.WorkerSettings`; requests cannot set it), a cold warm-up job, then one
1-fact job per method; the set size each job really evaluated on is the report's
``metrics.locality.set_size`` (a world with fewer facts of a kind caps it).

Acceptance thresholds are set to accept everything so each job publishes (the publish stage is
part of what is measured); metrics are reported but are not the point here (``featureedit bench``
is the quality benchmark).

The package, by concept: :mod:`~ops.bench_service.plan` (what to measure, the reproducing
command line), :mod:`~ops.bench_service.run` (the private stack, the jobs, the demo facts),
:mod:`~ops.bench_service.job_times` (one job's stage times, the summary) and
:mod:`~ops.bench_service.tables` (plain-text and Markdown output).
"""
