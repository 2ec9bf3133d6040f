;; Imported globals are reached through a pointer in the VM context: two dependent accesses.
(module
  (import "env" "counter" (global $counter (mut i64)))
  (import "env" "limit" (global $limit i32))
  (func (export "bump") (result i64)
    (global.set $counter (i64.add (global.get $counter) (i64.const 1)))
    (global.get $counter))
  (func (export "limit") (result i32)
    (global.get $limit)))
