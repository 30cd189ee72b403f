# A long-running java-crun service that shuts down gracefully on SIGTERM (kill_timeout 10s).
# `./invoke lab.run-job jobs/sleeper.nomad.hcl --wait-s 20` runs it for 20 s, then stops it.
job "sleeper" {
  type = "service"

  group "app" {
    task "sleeper" {
      driver       = "java-crun"
      kill_signal  = "SIGTERM"
      kill_timeout = "10s"

      artifact {
        source      = "ARTIFACTS/sleeper.jar"
        destination = "local/sleeper.jar"
      }

      config {
        jar_path = "local/sleeper.jar"
      }

      env {
        SHUTDOWN_DELAY_MS = "500"
      }

      resources {
        cpu        = 100
        memory     = 128
        memory_max = 256
      }
    }
  }
}
