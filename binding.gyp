{
  "targets": [
    {
      "target_name": "kernscope",
      "sources": ["addon/kernscope.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-O2", "-g"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    },
    {
      "target_name": "hook_targets",
      "sources": ["addon/hook-targets.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2", "-g"]
    }
  ]
}
