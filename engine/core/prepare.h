/*
 * prepare.h: the asynchronous start-up reads of pipelines and sources
 * (prepare.c), private to engine/core. Loop thread only.
 */
#ifndef MM_PREPARE_H
#define MM_PREPARE_H

#include "engine.h"

/* Starts the descriptor check of a pipeline just added: p reads no record
 * until its stored descriptor was read, checked and written (the engine's
 * sources are held until then). 0, or MM_ENOMEM (nothing started). */
int mm_prep_pipeline(mm_engine_t *ctx, mm_pipeline_t *p);

/* 1 while p's descriptor check is not done. */
int mm_prep_pending(const mm_engine_t *ctx, const mm_pipeline_t *p);

/* p is being removed: its check, if any, is dropped when its answer comes. */
void mm_prep_forget(mm_engine_t *ctx, const mm_pipeline_t *p);

/* Starts the store's start-up checks (mm_engine_new). 0 or an error. */
int mm_prep_store(mm_engine_t *ctx);

/* Running: a failed store check stops the engine (status 1). */
void mm_prep_check_store(mm_engine_t *ctx);

/* Reads the stored position of every source not started yet whose
 * pipelines are all ready, and starts it from there (when running and the
 * store's checks have passed). */
void mm_prep_start_sources(mm_engine_t *ctx);

/* Frees what is left (engine_free, after the store is closed). */
void mm_prep_free_all(mm_engine_t *ctx);

/* engine.c: the engine's entry of src, or NULL once it closed. */
mm_engine_source_t *mm_engine_source_of(mm_engine_t *ctx, mm_source_t *src);

#endif
