// relais_sendfile: zero-copy file -> socket transfers for Node.js (Linux sendfile(2)).
//
// Node has no sendfile: every byte it serves is read into a Buffer and written out again, which costs
// ~10x nginx's CPU per byte. This addon moves those transfers to one background thread with its own
// epoll set. JS hands it (socket fd, file fd, offset, length); the thread sendfile()s until the kernel
// says EAGAIN, waits for EPOLLOUT, and calls back once every byte is in the socket (or on an error).
//
// Safety rules:
// - Both fds are dup'd when a job starts and closed by the thread when it ends: if Node closes the
//   connection meanwhile, the thread never writes to a reused fd number.
// - A job belongs to the thread from start() to its completion callback; JS may only set its
//   `cancelled` flag (atomically) and wake the thread. The JS thread frees the job after the callback.
// - Jobs finish only in the thread's ready-queue pass, never while queued, so nothing is freed twice.
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (4 * 1024 * 1024)
#define MAX_EVENTS 64

typedef struct job {
  int sock, file;
  off_t offset;
  int64_t remaining;
  int64_t sent;
  int64_t idle_ms;
  int64_t deadline_ms; // 0 = no idle limit
  int err;
  atomic_int cancelled;
  int in_epoll;
  int queued;
  struct job *next_active;
  struct job *next_ready;
  struct job *next_msg; // incoming / done lists (under the mutex)
  napi_ref cb;
} job_t;

typedef struct state {
  int epfd;
  int evfd;
  pthread_t thread;
  int thread_started;
  pthread_mutex_t mu;
  job_t *incoming; // started by JS, not yet seen by the thread
  job_t *done;     // finished, callback not yet delivered
  int stop;
  napi_threadsafe_function tsfn;
  // thread-only:
  job_t *active;
  job_t *ready_head, *ready_tail;
} state_t;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake(state_t *st) {
  uint64_t one = 1;
  ssize_t r = write(st->evfd, &one, sizeof one);
  (void)r; // EAGAIN: the counter is already non-zero, the thread will wake anyway
}

static void enqueue_ready(state_t *st, job_t *j) {
  if (j->queued) return;
  j->queued = 1;
  j->next_ready = NULL;
  if (st->ready_tail) st->ready_tail->next_ready = j;
  else st->ready_head = j;
  st->ready_tail = j;
}

static job_t *dequeue_ready(state_t *st) {
  job_t *j = st->ready_head;
  if (!j) return NULL;
  st->ready_head = j->next_ready;
  if (!st->ready_head) st->ready_tail = NULL;
  j->queued = 0;
  return j;
}

static void finish(state_t *st, job_t *j, int err) {
  if (j->in_epoll) epoll_ctl(st->epfd, EPOLL_CTL_DEL, j->sock, NULL);
  close(j->sock);
  close(j->file);
  j->err = err;
  for (job_t **p = &st->active; *p; p = &(*p)->next_active) {
    if (*p == j) {
      *p = j->next_active;
      break;
    }
  }
  pthread_mutex_lock(&st->mu);
  j->next_msg = st->done;
  st->done = j;
  // Stopping means Node is tearing the environment down: its callback queue may already be gone.
  int stopping = st->stop;
  pthread_mutex_unlock(&st->mu);
  if (!stopping) napi_call_threadsafe_function(st->tsfn, NULL, napi_tsfn_nonblocking);
}

// One step of a job: send up to CHUNK. Returns 1 if the job should be queued again right away.
static int step(state_t *st, job_t *j) {
  if (atomic_load(&j->cancelled)) {
    finish(st, j, ECANCELED);
    return 0;
  }
  if (j->remaining == 0) {
    finish(st, j, 0);
    return 0;
  }
  size_t n = j->remaining > CHUNK ? CHUNK : (size_t)j->remaining;
  ssize_t w = sendfile(j->sock, j->file, &j->offset, n);
  if (w > 0) {
    j->sent += w;
    j->remaining -= w;
    if (j->idle_ms > 0) j->deadline_ms = now_ms() + j->idle_ms;
    if (j->remaining == 0) {
      finish(st, j, 0);
      return 0;
    }
    return 1;
  }
  if (w == 0) {
    finish(st, j, ENODATA); // the file is shorter than the range asked for
    return 0;
  }
  if (errno == EINTR) return 1;
  if (errno == EAGAIN) {
    if (!j->in_epoll) {
      struct epoll_event ev = {.events = EPOLLOUT | EPOLLET, .data.ptr = j};
      if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, j->sock, &ev) != 0) {
        finish(st, j, errno);
        return 0;
      }
      j->in_epoll = 1;
    }
    return 0;
  }
  finish(st, j, errno);
  return 0;
}

static void *run(void *arg) {
  state_t *st = arg;
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int timeout = -1;
    if (st->ready_head) {
      timeout = 0;
    } else {
      int64_t soonest = 0;
      for (job_t *j = st->active; j; j = j->next_active) {
        if (j->deadline_ms > 0 && (soonest == 0 || j->deadline_ms < soonest)) soonest = j->deadline_ms;
      }
      if (soonest > 0) {
        int64_t d = soonest - now_ms();
        timeout = d < 0 ? 0 : (d > 60000 ? 60000 : (int)d);
      }
    }
    int n = epoll_wait(st->epfd, events, MAX_EVENTS, timeout);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL) {
        uint64_t v;
        ssize_t r = read(st->evfd, &v, sizeof v);
        (void)r;
        continue;
      }
      enqueue_ready(st, events[i].data.ptr);
    }
    pthread_mutex_lock(&st->mu);
    int stop = st->stop;
    job_t *in = st->incoming;
    st->incoming = NULL;
    pthread_mutex_unlock(&st->mu);
    while (in) {
      job_t *j = in;
      in = j->next_msg;
      j->next_active = st->active;
      st->active = j;
      enqueue_ready(st, j);
    }
    // Cancelled, timed out, or stopping: let the ready pass finish them.
    int64_t now = now_ms();
    for (job_t *j = st->active; j; j = j->next_active) {
      if (stop) atomic_store(&j->cancelled, 1);
      if (atomic_load(&j->cancelled) || (j->deadline_ms > 0 && j->deadline_ms <= now)) enqueue_ready(st, j);
    }
    // One pass over what is ready now; jobs that could send more go to the back of the queue.
    job_t *last = st->ready_tail;
    for (job_t *j = dequeue_ready(st); j; j = dequeue_ready(st)) {
      int was_last = j == last;
      if (!atomic_load(&j->cancelled) && j->deadline_ms > 0 && j->deadline_ms <= now) finish(st, j, ETIMEDOUT);
      else if (step(st, j)) enqueue_ready(st, j);
      if (was_last) break;
    }
    if (stop && !st->active) break;
  }
  return NULL;
}

// Runs on the JS thread: deliver every finished job's callback, then free it.
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb;
  (void)data;
  state_t *st = context;
  pthread_mutex_lock(&st->mu);
  job_t *list = st->done;
  st->done = NULL;
  pthread_mutex_unlock(&st->mu);
  // The list is newest-first; order between different jobs does not matter.
  while (list) {
    job_t *j = list;
    list = j->next_msg;
    if (env != NULL) {
      napi_value cb, global, argv[2];
      if (napi_get_reference_value(env, j->cb, &cb) == napi_ok && cb != NULL) {
        napi_get_global(env, &global);
        napi_create_int32(env, j->err, &argv[0]);
        napi_create_int64(env, j->sent, &argv[1]);
        napi_value result;
        napi_status s = napi_call_function(env, global, cb, 2, argv, &result);
        if (s == napi_pending_exception) {
          napi_value exc;
          napi_get_and_clear_last_exception(env, &exc);
          napi_fatal_exception(env, exc);
        }
      }
      napi_delete_reference(env, j->cb);
    }
    free(j);
  }
}

static void state_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  state_t *st = data;
  if (st->thread_started) {
    pthread_mutex_lock(&st->mu);
    st->stop = 1;
    pthread_mutex_unlock(&st->mu);
    wake(st);
    pthread_join(st->thread, NULL);
  }
  close(st->epfd);
  close(st->evfd);
  pthread_mutex_destroy(&st->mu);
  free(st);
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static int ensure_thread(napi_env env, state_t *st) {
  if (st->thread_started) return 1;
  napi_value name;
  napi_create_string_utf8(env, "relais_sendfile", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, st, call_js, &st->tsfn) != napi_ok) {
    napi_throw_error(env, NULL, "relais_sendfile: cannot create the callback queue");
    return 0;
  }
  // Open transfers keep their sockets (and so the process) alive; the queue itself must not.
  napi_unref_threadsafe_function(env, st->tsfn);
  if (pthread_create(&st->thread, NULL, run, st) != 0) {
    napi_throw_error(env, NULL, "relais_sendfile: cannot start its thread");
    return 0;
  }
  st->thread_started = 1;
  return 1;
}

// send(sockFd, fileFd, offset, length, idleMs, cb(errno, sent)) -> job
static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  state_t *st;
  napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&st);
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "send(sockFd, fileFd, offset, length, idleMs, cb)");
    return NULL;
  }
  int32_t sock, file;
  int64_t offset, length, idle;
  napi_valuetype t;
  napi_typeof(env, argv[5], &t);
  if (napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_get_value_int32(env, argv[1], &file) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok || napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      napi_get_value_int64(env, argv[4], &idle) != napi_ok || t != napi_function || sock < 0 || file < 0 || offset < 0 ||
      length < 0 || idle < 0) {
    napi_throw_type_error(env, NULL, "send(sockFd, fileFd, offset, length, idleMs, cb): bad arguments");
    return NULL;
  }
  if (!ensure_thread(env, st)) return NULL;
  job_t *j = calloc(1, sizeof *j);
  if (!j) return throw_errno(env, "relais_sendfile", ENOMEM);
  j->sock = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  if (j->sock < 0) {
    int e = errno;
    free(j);
    return throw_errno(env, "relais_sendfile: dup socket", e);
  }
  j->file = fcntl(file, F_DUPFD_CLOEXEC, 0);
  if (j->file < 0) {
    int e = errno;
    close(j->sock);
    free(j);
    return throw_errno(env, "relais_sendfile: dup file", e);
  }
  j->offset = (off_t)offset;
  j->remaining = length;
  j->idle_ms = idle;
  j->deadline_ms = idle > 0 ? now_ms() + idle : 0;
  atomic_init(&j->cancelled, 0);
  napi_create_reference(env, argv[5], 1, &j->cb);
  pthread_mutex_lock(&st->mu);
  j->next_msg = st->incoming;
  st->incoming = j;
  pthread_mutex_unlock(&st->mu);
  wake(st);
  napi_value ext;
  napi_create_external(env, j, NULL, NULL, &ext);
  return ext;
}

// cancel(job): the job ends with ECANCELED (its callback still runs). Only valid before that callback.
static napi_value js_cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  state_t *st;
  napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&st);
  void *p = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "cancel(job)");
    return NULL;
  }
  atomic_store(&((job_t *)p)->cancelled, 1);
  wake(st);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  state_t *st = calloc(1, sizeof *st);
  if (!st) return throw_errno(env, "relais_sendfile", ENOMEM);
  st->epfd = epoll_create1(EPOLL_CLOEXEC);
  st->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (st->epfd < 0 || st->evfd < 0) return throw_errno(env, "relais_sendfile: epoll/eventfd", errno);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->evfd, &ev);
  pthread_mutex_init(&st->mu, NULL);
  napi_set_instance_data(env, st, state_finalize, NULL);
  napi_property_descriptor props[] = {
      {"send", NULL, js_send, NULL, NULL, NULL, napi_default, st},
      {"cancel", NULL, js_cancel, NULL, NULL, NULL, napi_default, st},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
