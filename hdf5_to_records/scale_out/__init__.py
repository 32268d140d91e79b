"""Beyond one machine: task arrays (``tasks``), Apache Beam (``beam_runner``) and the
tf.data service servers (``data_service``)."""
