"""The kopf operator that reconciles reasonops resources into Kubernetes workloads."""
