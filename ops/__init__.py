"""Operations tooling that ships beside the packages: benchmarks, samples, deployment."""
