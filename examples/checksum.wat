;; checksum.wat: the FNV-1a 64-bit hash of each chunk, a dispy ABI v1 WebAssembly payload.
;;
;; Use with the split rule `bytes:SIZE`. For every chunk the payload emits 8 bytes: the chunk's
;; FNV-1a 64-bit hash, little-endian. The job's output is therefore one 8-byte hash per chunk, in
;; chunk order. Arguments are ignored.
;;
;;   dispy-submit run --payload examples/checksum.wat --input big.bin --split bytes:4MiB \
;;       --output hashes.bin
(module
  ;; The only host function: append `len` bytes at `ptr` to the chunk's output.
  (import "dispy" "emit" (func $emit (param $ptr i32) (param $len i32)))

  ;; One page to start with; dispy_alloc grows it to fit each chunk.
  (memory (export "memory") 1)

  ;; Static data, below the heap: bytes 0..8 hold the hash while it is emitted.
  (global $hash_buf i32 (i32.const 0))

  ;; ---- Bump allocator -----------------------------------------------------------------------
  ;; $heap is the first free byte; everything below 1024 is static data. The host allocates the
  ;; job's arguments once per worker, then each chunk's input right before calling dispy_run, so
  ;; the input is always the newest allocation and everything from the input pointer upwards
  ;; belongs to the current chunk. dispy_run ends by moving $heap back to the input pointer, which
  ;; frees the input (and any scratch space) while the arguments, allocated earlier and so below
  ;; it, stay intact. Memory use is thus bounded by the arguments plus the largest chunk.
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (export "dispy_alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32) (local $need i64) (local $have i64)
    ;; Round up to 8 bytes so allocations can hold i64 and f64 values.
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    ;; Unsigned wrap-around: the request cannot fit a 4 GiB memory.
    (if (i32.lt_u (local.get $ptr) (global.get $heap)) (then (unreachable)))
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then (unreachable)))
    ;; Pages needed to hold [0, end), computed in 64 bits so 4 GiB does not overflow.
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
    (local $hash i64) (local $p i32) (local $end i32)
    ;; FNV-1a: start from the offset basis; for each byte, xor it in, then multiply by the prime.
    (local.set $hash (i64.const 0xcbf29ce484222325))
    (local.set $p (local.get $in))
    (local.set $end (i32.add (local.get $in) (local.get $in_len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $hash
          (i64.mul
            (i64.xor (local.get $hash) (i64.load8_u (local.get $p)))
            (i64.const 0x100000001b3)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    ;; WebAssembly stores are little-endian, which is the output format.
    (i64.store (global.get $hash_buf) (local.get $hash))
    (call $emit (global.get $hash_buf) (i32.const 8))
    ;; Free the input (see the allocator above).
    (global.set $heap (local.get $in))
    (i32.const 0))
)
