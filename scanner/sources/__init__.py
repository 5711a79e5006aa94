"""The edge through which the trust layers reach the network and the cluster (issue #18).

``scanner.verify`` and ``scanner.policy`` decide from bytes and documents; the protocols they take
(:class:`scanner.verify.base.HttpGet`, :class:`scanner.verify.base.Fetcher`,
:class:`scanner.policy.cluster.ClusterReader`) are implemented here, over httpx (under the wall-clock
deadline of ``scanner.registry.deadline``) and the Kubernetes client. A trust layer that is given no
implementation takes this package's default (imported lazily, inside the function, as python-tuf's
``Updater`` defaults to its ``RequestsFetcher``), so importing the trust layers loads no HTTP client.
"""
