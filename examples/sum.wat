;; sum.wat: the sum of every byte of the input, a dispy ABI v1 WebAssembly payload that reduces.
;;
;; For every chunk dispy_run emits 8 bytes, the sum of the chunk's bytes as a little-endian u64;
;; dispy_combine adds two such sums. Run with `--results reduce` (job key `results = "reduce"`),
;; the output file holds one 8-byte sum of the whole input, whatever the split rule; with
;; `--results concat` it holds one sum per chunk. Arguments are ignored.
;;
;;   dispy-submit run --payload examples/sum.wat --input big.bin --split bytes:4MiB \
;;       --results reduce --output sum.bin
(module
  (import "dispy" "emit" (func $emit (param $ptr i32) (param $len i32)))

  (memory (export "memory") 1)

  ;; Static data, below the heap: bytes 0..8 hold the sum while it is emitted.
  (global $sum_buf i32 (i32.const 0))

  ;; ---- Bump allocator (as in checksum.wat) ----------------------------------------------------
  ;; The host allocates the arguments once per worker, then a chunk's input right before
  ;; dispy_run, or both results of a combine with one call right before dispy_combine; each entry
  ;; point ends by moving $heap back to its first pointer, freeing what the call used.
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
    ;; Eight bytes at a time while they last: each byte of the word, widened, added in.
    (block $words
      (loop $word
        (br_if $words (i32.gt_u (i32.add (local.get $p) (i32.const 8)) (local.get $end)))
        (local.set $sum (i64.add (local.get $sum) (call $byte_sum (i64.load (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $word)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $sum (i64.add (local.get $sum) (i64.load8_u (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (i64.store (global.get $sum_buf) (local.get $sum))
    (call $emit (global.get $sum_buf) (i32.const 8))
    (global.set $heap (local.get $in))
    (i32.const 0))

  ;; The sum of the eight bytes of $w: pairs, then quads, then the halves, in 16-bit lanes.
  (func $byte_sum (param $w i64) (result i64)
    (local.set $w (i64.add (i64.and (local.get $w) (i64.const 0x00ff00ff00ff00ff))
                           (i64.and (i64.shr_u (local.get $w) (i64.const 8)) (i64.const 0x00ff00ff00ff00ff))))
    (local.set $w (i64.add (i64.and (local.get $w) (i64.const 0x0000ffff0000ffff))
                           (i64.and (i64.shr_u (local.get $w) (i64.const 16)) (i64.const 0x0000ffff0000ffff))))
    (i64.add (i64.and (local.get $w) (i64.const 0xffffffff)) (i64.shr_u (local.get $w) (i64.const 32))))

  ;; Two sums in, their sum out (a result that is not 8 bytes is a payload error, code 1).
  (func (export "dispy_combine")
        (param $a i32) (param $a_len i32) (param $b i32) (param $b_len i32) (result i32)
    (if (i32.or (i32.ne (local.get $a_len) (i32.const 8)) (i32.ne (local.get $b_len) (i32.const 8)))
      (then
        (global.set $heap (local.get $a))
        (return (i32.const 1))))
    (i64.store (global.get $sum_buf) (i64.add (i64.load (local.get $a)) (i64.load (local.get $b))))
    (call $emit (global.get $sum_buf) (i32.const 8))
    (global.set $heap (local.get $a))
    (i32.const 0))
)
