;; sum.wat: the sum of a chunk's bytes as a little-endian u64, a dispy ABI v1 WebAssembly payload.
;;
;; The W1 benchmark payload (bench/): with `bytes:16` every chunk is 16 bytes and the output is 8
;; bytes per chunk, so the job measures dispy's per-chunk overhead rather than guest work.
;; Arguments are ignored. Any split rule works; chunks of any length are summed. It also exports
;; dispy_combine (two sums in, their sum out) for W3 with `--results reduce`: 512 MiB in, the
;; whole input's 8-byte sum out.
(module
  ;; The only host function: append `len` bytes at `ptr` to the chunk's output.
  (import "dispy" "emit" (func $emit (param $ptr i32) (param $len i32)))

  ;; One page to start with; dispy_alloc grows it to fit each chunk.
  (memory (export "memory") 1)

  ;; Static data, below the heap: bytes 0..8 hold the sum while it is emitted.
  (global $sum_buf i32 (i32.const 0))

  ;; ---- Bump allocator (as in examples/checksum.wat) ----------------------------------------
  ;; $heap is the first free byte; everything below 1024 is static data. The host allocates the
  ;; job's arguments once per worker, then each chunk's input right before dispy_run, which ends
  ;; by moving $heap back to the input pointer, freeing the input but keeping the arguments.
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (export "dispy_alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32) (local $need i64) (local $have i64)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.lt_u (local.get $ptr) (global.get $heap)) (then (unreachable)))
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then (unreachable)))
    (local.set $need
      (i64.shr_u (i64.add (i64.extend_i32_u (local.get $end)) (i64.const 65535)) (i64.const 16)))
    (local.set $have (i64.extend_i32_u (memory.size)))
    (if (i64.gt_u (local.get $need) (local.get $have))
      (then
        (if (i32.eq (memory.grow (i32.wrap_i64 (i64.sub (local.get $need) (local.get $have))))
                    (i32.const -1))
          (then (unreachable)))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  ;; ---- ABI ----------------------------------------------------------------------------------
  (func (export "dispy_abi_version") (result i32) (i32.const 1))

  (func (export "dispy_run")
        (param $in i32) (param $in_len i32) (param $args i32) (param $args_len i32) (result i32)
    (local $sum i64) (local $p i32) (local $end i32)
    (local.set $p (local.get $in))
    (local.set $end (i32.add (local.get $in) (local.get $in_len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $sum (i64.add (local.get $sum) (i64.load8_u (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    ;; WebAssembly stores are little-endian, which is the output format.
    (i64.store (global.get $sum_buf) (local.get $sum))
    (call $emit (global.get $sum_buf) (i32.const 8))
    ;; Free the input (see the allocator above).
    (global.set $heap (local.get $in))
    (i32.const 0))

  ;; Two 8-byte sums in (placed with one dispy_alloc, b right after a), their sum out.
  (func (export "dispy_combine")
        (param $a i32) (param $a_len i32) (param $b i32) (param $b_len i32) (result i32)
    (if (i32.or (i32.ne (local.get $a_len) (i32.const 8)) (i32.ne (local.get $b_len) (i32.const 8)))
      (then (return (i32.const 1))))
    (i64.store (global.get $sum_buf) (i64.add (i64.load (local.get $a)) (i64.load (local.get $b))))
    (call $emit (global.get $sum_buf) (i32.const 8))
    (global.set $heap (local.get $a))
    (i32.const 0))
)
