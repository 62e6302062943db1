;; upper.wat: uppercases ASCII text, a dispy ABI v1 WebAssembly payload.
;;
;; Use with the split rule `lines:N`. Each chunk is emitted with the bytes `a`-`z` replaced by
;; `A`-`Z` and every other byte unchanged, so the output has the input's length and, concatenated
;; in chunk order, is the whole input uppercased. Arguments are ignored.
;;
;;   dispy-submit run --payload examples/upper.wat --input book.txt --split lines:1000 \
;;       --output BOOK.txt
(module
  ;; The only host function: append `len` bytes at `ptr` to the chunk's output.
  (import "dispy" "emit" (func $emit (param $ptr i32) (param $len i32)))

  ;; One page to start with; dispy_alloc grows it to fit each chunk.
  (memory (export "memory") 1)

  ;; ---- Bump allocator -----------------------------------------------------------------------
  ;; $heap is the first free byte (this module has no static data, 1024 keeps address 0 unused).
  ;; The host allocates the job's arguments once per worker, then each chunk's input right before
  ;; calling dispy_run, so the input is always the newest allocation and everything from the input
  ;; pointer upwards belongs to the current chunk. dispy_run ends by moving $heap back to the input
  ;; pointer, which frees the input while the arguments, allocated earlier and so below it, stay
  ;; intact. Memory use is thus bounded by the arguments plus the largest chunk.
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
    (local $p i32) (local $end i32) (local $byte i32)
    ;; The input belongs to the guest, so it is converted in place and emitted as a whole.
    (local.set $p (local.get $in))
    (local.set $end (i32.add (local.get $in) (local.get $in_len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $byte (i32.load8_u (local.get $p)))
        ;; byte - 'a' < 26 (unsigned) exactly when 'a' <= byte <= 'z'; 'a' - 'A' = 32.
        (if (i32.lt_u (i32.sub (local.get $byte) (i32.const 97)) (i32.const 26))
          (then (i32.store8 (local.get $p) (i32.sub (local.get $byte) (i32.const 32)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (call $emit (local.get $in) (local.get $in_len))
    ;; Free the input (see the allocator above).
    (global.set $heap (local.get $in))
    (i32.const 0))
)
