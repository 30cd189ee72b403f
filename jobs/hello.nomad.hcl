# A java-crun job: run it on the lab with `./invoke lab.run-job jobs/hello.nomad.hcl`.
# ARTIFACTS is replaced by the URL of the lab's artifact server (which serves build/jars/)
# as seen from the lab host; on a real cluster point the artifact at your own JAR store.
job "hello" {
  type = "batch"

  group "app" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    task "hello" {
      driver = "java-crun"

      artifact {
        source      = "ARTIFACTS/hello.jar"
        destination = "local/hello.jar"
        mode        = "file"
      }

      config {
        jar_path    = "local/hello.jar"
        jvm_options = ["-Xmx64m"]
        args        = ["from", "an", "example", "job"]
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
