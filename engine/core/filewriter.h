/*
 * filewriter.h: a small file the loop thread replaces often (status.json,
 * every second and after each reload), written on the libuv thread pool so
 * that the loop never waits on the disk. Replacing a file means creating,
 * writing, fsyncing and renaming (mm_file_write_atomic); each of these can
 * wait hundreds of milliseconds for the file system's journal when other
 * processes write to the same disk, and on the loop thread that wait would
 * stall every source and timer of the process.
 *
 * Only the newest content matters. mm_fwriter_put() copies the bytes; if no
 * write is in flight a pool job writes them, otherwise they wait as the one
 * pending content (a newer put replaces an older pending one) and the job
 * for them starts when the running one ends. A disk that stays slow thus
 * costs one pool thread, never a queue.
 *
 * mm_fwriter_put_sync() writes on the calling thread, for the last content
 * after the loop stopped. Writes are numbered and run under a mutex, and a
 * write never renames a content older than one already written: a pool job
 * that starts after the synchronous write (or was still queued) is skipped,
 * and one that was writing finishes first.
 *
 * The result of the last finished write is kept (mm_fwriter_result), so that
 * the caller can report a failing disk once and its recovery once.
 *
 * Ownership: the writer copies the path and every content. It belongs to
 * the loop thread; mm_fwriter_close() drops the pending content and frees
 * the writer at once, or from the loop when the job in flight ends (the
 * loop must run until then, as closing an engine does).
 */
#ifndef MM_FILEWRITER_H
#define MM_FILEWRITER_H

#include <stddef.h>
#include <uv.h>

typedef struct mm_fwriter mm_fwriter_t;

/* Returns 0 or MM_ENOMEM. */
int mm_fwriter_new(uv_loop_t *loop, const char *path, mm_fwriter_t **out);

/* The file this writer replaces. */
const char *mm_fwriter_path(const mm_fwriter_t *w);

/* Hands over the next content (copied); returns 0, MM_ENOMEM, or MM_EIO when
 * the pool job cannot be queued. Loop thread. */
int mm_fwriter_put(mm_fwriter_t *w, const void *p, size_t len);

/* Writes p now on the calling thread, after any write in flight, and drops
 * the pending content; returns what mm_file_write_atomic returns (the
 * diagnostics slot names the step that failed). */
int mm_fwriter_put_sync(mm_fwriter_t *w, const void *p, size_t len);

/* The result of the last finished write: 0 (also before any), or a
 * negative MM_E* code with its detail copied to detail. Loop thread. */
int mm_fwriter_result(const mm_fwriter_t *w, char *detail, size_t cap);

/* Drops the pending content and frees the writer, now or when the job in
 * flight ends. NULL is a no-op. Loop thread. */
void mm_fwriter_close(mm_fwriter_t *w);

#endif
