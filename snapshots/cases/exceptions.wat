;; Exception handling: a call inside `try_table` is a `try_call` whose exception edge goes to
;; the dispatch block (tag compare against the VM context's tag array, payload load, release of
;; the object for a payload-only catch); a throw in the same function jumps to the dispatch
;; directly; a throw nobody in the function catches calls the `throw_ref` libcall. The call
;; outside the `try_table` stays a plain call.
(module
  (tag $e (param i32))
  (func $may_throw (param i32) (result i32)
    (if (local.get 0) (then (throw $e (local.get 0))))
    (i32.const 0))
  (func (export "catch") (param i32) (result i32)
    (drop (call $may_throw (i32.const 0)))
    (block $h (result i32)
      (try_table (result i32) (catch $e $h)
        (call $may_throw (local.get 0))))))
