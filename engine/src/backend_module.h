/* The C boundary between the engine and a run-time loaded backend module (libmlmamba-cuda.so).
   Plain C types only: the module is built by another compiler (nvcc) and loaded with dlopen, and it
   must not carry its own copy of the engine. A module exports one symbol, mlmamba_backend_entry,
   returning a table whose api_version the engine checks before using anything else in it. */
#ifndef MLMAMBA_BACKEND_MODULE_H_
#define MLMAMBA_BACKEND_MODULE_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLMAMBA_BACKEND_API_VERSION 1

struct mlmamba_device_info {
  int index;
  char name[256];
  size_t total_memory;
  size_t free_memory;
  int compute_major;
  int compute_minor;
};

struct mlmamba_backend_v1 {
  int api_version; /* MLMAMBA_BACKEND_API_VERSION of the module's build */
  const char* name;
  /* Writes up to `max` devices; returns how many exist, or -1 with a message in `err`. */
  int (*probe)(struct mlmamba_device_info* out, int max, char* err, size_t err_len);
};

typedef const struct mlmamba_backend_v1* (*mlmamba_backend_entry_fn)(void);
#define MLMAMBA_BACKEND_ENTRY "mlmamba_backend_entry"

#ifdef __cplusplus
}
#endif

#endif /* MLMAMBA_BACKEND_MODULE_H_ */
